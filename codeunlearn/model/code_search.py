"""Finding each token's codes: the exact cosine top-k in memory-bounded chunks (optionally ranked in
bf16 and re-ranked in fp32), orthogonal matching pursuit, or the grouped index
(codeunlearn.model.code_index); and `CodeSearch`, what the search derives from a codebook and its
mask, kept until they move.

Shapes: n tokens, C codes, k codes chosen per token, e code width, m coarse candidates.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F

from codeunlearn.core.config import BottleneckConfig
from codeunlearn.model.code_index import (
    CodeIndex,
    balanced_groups,
    chunk_tokens,
    grouped_topk,
    index_codes,
    tile_size,
)
from codeunlearn.model.combine import pursuit
from codeunlearn.model.serving import ServingPolicy


class CodeSearch:
    """The search over one codebook and what it derives from it: the codes as unit vectors, whether
    any code is masked, and, for the grouped search, the grouping and the index.

    Each is rebuilt only when what it derives from changes: a decoding step would otherwise read and
    write the whole codebook to select codes for a few tokens. The grouping is rebuilt whenever the
    codes change, except while `holding_groups` (training), where only `regroup` rebuilds it; the
    index follows every change of the codes or the mask.
    """

    def __init__(self) -> None:
        self._units: torch.Tensor | None = None  # (C, e)
        self._units_key: tuple[int, int] | None = None
        self._groups: torch.Tensor | None = None  # (G, S) code ids
        self._groups_key: tuple[int, int] | None = None
        self._index: CodeIndex | None = None
        self._index_key: tuple[int, int, int] | None = None
        self._mask_key: tuple[int, int] | None = None
        self._any_masked = False
        self._is_holding_groups = False

    @property
    def groups(self) -> torch.Tensor | None:
        """The grouped search's current grouping (G, S) of code ids, None until the next search."""
        return self._groups

    def select(
        self,
        codes: torch.Tensor,
        h: torch.Tensor,
        excluded: torch.Tensor | None,
        config: BottleneckConfig,
        policy: ServingPolicy,
    ) -> torch.Tensor:
        """Each row of h's top_k codes (see CodebookBottleneck.select).

        Args:
            codes: (C, e) the codebook parameter (its version tells when it changed).
            h: (N, e) encoded vectors.
            excluded: (C,) bool, codes never to choose, or None.
            config: the bottleneck's build settings; policy: the search in force.
        Returns:
            (N, k) int64 code ids, most similar first (pursuit: in the order chosen).
        """
        units_of_codes = self.unit_codes(codes)  # (C, e)
        top_k = config.top_k
        if policy.search == "grouped":
            index = self._grouped_index(codes, units_of_codes, excluded, policy.n_search_groups(config))
            return _grouped_select(h, index, config, policy)
        chunks = []
        for chunk in h.split(config.chunk_tokens):
            units = F.normalize(chunk.float(), dim=-1)  # (n, e)
            if config.combine == "pursuit":
                chunks.append(pursuit(units, units_of_codes, excluded, top_k))
            elif config.coarse_candidates:
                chunks.append(coarse_then_exact(units, units_of_codes, excluded, config))
            else:
                chunks.append(chunked_topk(units, units_of_codes, excluded, top_k, config.chunk_codes))
        return torch.cat(chunks) if chunks else h.new_zeros((0, top_k), dtype=torch.long)

    def is_any_masked(self, mask: torch.Tensor) -> bool:
        """Whether `mask` (C,) masks any code; read from the device once per change of the mask, not
        per call, since reading it syncs with the device."""
        key = (mask._version, mask.data_ptr())
        if self._mask_key != key:
            self._any_masked = bool(mask.any())
            self._mask_key = key
        return self._any_masked

    def unit_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """The codes as unit vectors (C, e), normalised once per change of the codes."""
        if self._units is None or self._units_key != _codes_key(codes):
            self._units = F.normalize(codes.detach().float(), dim=-1)
            self._units_key = _codes_key(codes)
        return self._units

    def forget_derived_codes(self) -> None:
        """Drop the unit codes and the index, and the grouping unless groups are being held: a fused
        optimizer step changes the codes without bumping their version."""
        self._units_key = self._index_key = None
        if not self._is_holding_groups:
            self._groups = None

    def regroup(self) -> None:
        """Group the codes anew at the next search, even while holding groups (a re-seeding, a load)."""
        self._groups = None

    def forget_index(self) -> None:
        """Build grouping and index anew at the next search (the search settings changed)."""
        self._groups = self._index = None

    @contextlib.contextmanager
    def holding_groups(self) -> Iterator[None]:
        """See CodebookBottleneck.holding_groups."""
        self._is_holding_groups = True
        try:
            yield
        finally:
            self._is_holding_groups = False
            self._groups = None  # the trained codes are grouped anew, as a loaded copy would be

    def _grouped_index(
        self, codes: torch.Tensor, units: torch.Tensor, excluded: torch.Tensor | None, n_groups: int
    ) -> CodeIndex:
        """The index of unit codes (C, e) for the grouped search, rebuilt only when codes or mask moved."""
        codes_key = _codes_key(codes)
        if self._groups is None or (not self._is_holding_groups and self._groups_key != codes_key):
            self._groups = balanced_groups(units, n_groups)
            self._groups_key = codes_key
        index_key = (*codes_key, excluded._version if excluded is not None else -1)
        if self._index is None or self._index_key != index_key:
            self._index = index_codes(units, self._groups, excluded)
            self._index_key = index_key
        return self._index


def _codes_key(codes: torch.Tensor) -> tuple[int, int]:
    """Changes when the codes are edited in place through autograd's view (a re-seeding, a load, an
    edit under no_grad) or move. A fused optimizer step does not bump the version, hence
    `forget_derived_codes` on every forward that may be followed by one."""
    return (codes._version, codes.data_ptr())


def _grouped_select(
    h: torch.Tensor, index: CodeIndex, config: BottleneckConfig, policy: ServingPolicy
) -> torch.Tensor:
    """The grouped search's top_k codes of h (N, e), in chunks large enough to keep tile padding small."""
    probes, (n_groups, size) = policy.search_probes, index.members.shape
    chunks = []
    for chunk in h.split(chunk_tokens(config.chunk_tokens, n_groups, size, probes)):
        units = F.normalize(chunk.float(), dim=-1)  # (n, e)
        tile = tile_size(units.shape[0] * probes, n_groups, size)
        chunks.append(grouped_topk(units, index, config.top_k, probes, tile))
    return torch.cat(chunks) if chunks else h.new_zeros((0, config.top_k), dtype=torch.long)


def coarse_then_exact(
    units: torch.Tensor, codes: torch.Tensor, excluded: torch.Tensor | None, config: BottleneckConfig
) -> torch.Tensor:
    """bf16 ranking of all codes keeps m = coarse_candidates per token (n, m); fp32 cosines pick the
    top-k. units (n, e), codes (C, e) unit vectors; excluded (C,) bool or None. (n, k) int64

    bf16 rounds a cosine by up to ~0.004, so a true top-k code is lost only if m - k codes beat it
    by less than that; bench/bench_topk.py measures how often that happens.
    """
    with torch.autocast(units.device.type, enabled=False):
        candidates = chunked_topk(
            units.bfloat16(), codes.bfloat16(), excluded, config.coarse_candidates, config.chunk_codes
        )  # (n, m)
        exact = torch.einsum("ne,nme->nm", units, codes[candidates])  # (n, m) fp32 cosines
    if excluded is not None:
        exact.masked_fill_(excluded[candidates], float("-inf"))
    best = exact.topk(config.top_k, dim=-1).indices  # (n, k) positions among the candidates
    return candidates.gather(1, best)


def routed_topk(sims: torch.Tensor, allowed: torch.Tensor, top_k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row's top_k codes among its allowed ones (training's code routes).

    Args:
        sims: (n, C) similarities; allowed: (n, C) bool.
    Returns:
        (n, top_k) int64 ids, highest first, and (n,) the k-th highest allowed similarity.
    """
    values, ids = sims.masked_fill(~allowed, float("-inf")).topk(top_k, dim=-1)
    return ids, values[:, -1]


def chunked_topk(
    units: torch.Tensor, codes: torch.Tensor, excluded: torch.Tensor | None, top_k: int, chunk_codes: int
) -> torch.Tensor:
    """Ids of the top_k codes by dot product, scanning the codes `chunk_codes` at a time (0: all).

    Args:
        units: (n, e) unit vectors; codes: (C, e) unit codes, same dtype; excluded: (C,) bool or None.
    Returns:
        (n, top_k) int64 ids, highest first. Each chunk's top-k is merged into the running top-k, so
        the result equals one topk over all C similarities (up to the order of exact ties).
    """
    n_codes = codes.shape[0]
    step = chunk_codes or n_codes
    best_values = best_ids = None
    for start in range(0, n_codes, step):
        sims = units @ codes[start : start + step].T  # (n, c)
        if excluded is not None:
            sims.masked_fill_(excluded[start : start + step], float("-inf"))
        values, ids = sims.topk(min(top_k, sims.shape[1]), dim=-1)
        if best_values is None:
            best_values, best_ids = values, ids + start
            continue
        merged_values = torch.cat([best_values, values], dim=1)  # (n, 2k)
        merged_ids = torch.cat([best_ids, ids + start], dim=1)
        best_values, order = merged_values.topk(min(top_k, merged_values.shape[1]), dim=-1)
        best_ids = merged_ids.gather(1, order)
    return best_ids
