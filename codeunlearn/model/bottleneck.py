"""The discrete codebook bottleneck: every hidden vector is rebuilt from its top-k codes.

Shapes: B batch, T tokens, d hidden width, C codes, k codes chosen per token, e code width
(d, or the SAE width in the SAE-codebook variant).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from codeunlearn.core.config import BottleneckConfig
from codeunlearn.core.errors import CodeunlearnError
from codeunlearn.model.code_index import (
    CodeIndex,
    balanced_groups,
    chunk_tokens,
    grouped_topk,
    index_codes,
    tile_size,
)

if TYPE_CHECKING:
    import numpy as np

NO_CODE = -1  # code id reported for a zeroed slot or a position the bottleneck passes through


@dataclass
class BottleneckOutput:
    """What one bottleneck call produced; the caller reduces the per-token terms over its own mask."""

    hidden: torch.Tensor  # (B, T, d) the vector that replaces the input downstream
    codes: torch.Tensor  # (B, T, k) int64 chosen code ids, NO_CODE where none was used
    recon_error: torch.Tensor  # (B, T) ||x' - x||^2 / ||x||^2, zero at passed-through positions
    l1: torch.Tensor  # (B, T) mean |value| of the chosen code vectors (SAE variant), else zeros


def combine_mean(chosen: torch.Tensor, h: torch.Tensor, kept: torch.Tensor | None = None) -> torch.Tensor:
    """The chosen codes' mean (Codebook Features, the paper). chosen (..., k, e), h (..., e), kept
    (..., k) bool or None: a slot not kept (a masked code under the `zero` policy) adds nothing.

    Straight-through: the value is the mean, the gradient also reaches h (so the SAE encoder and the
    layers below learn) as if code selection were the identity.
    """
    if kept is not None:
        chosen = chosen * kept.unsqueeze(-1).to(chosen.dtype)
    return chosen.mean(dim=-2) + (h - h.detach())


def least_squares_weights(basis: torch.Tensor, h: torch.Tensor, ridge: float = 1e-4) -> torch.Tensor:
    """Weights w minimising ||h - w @ basis||^2 + ridge ||w||^2. basis (..., k, e), h (..., e) -> (..., k)"""
    # A k x k solve is not defined in bf16, so this runs in fp32 even under autocast.
    with torch.autocast(h.device.type, enabled=False):
        basis = basis.float()
        gram = basis @ basis.transpose(-1, -2)  # (..., k, k)
        eye = torch.eye(gram.shape[-1], dtype=gram.dtype, device=gram.device)
        return torch.linalg.solve(gram + ridge * eye, basis @ h.float().unsqueeze(-1)).squeeze(-1)


def combine_projection(
    chosen: torch.Tensor, h: torch.Tensor, kept: torch.Tensor | None = None
) -> torch.Tensor:
    """h projected onto the span of its chosen codes (least squares), then the terms of the slots not
    kept dropped. chosen (..., k, e), h (..., e), kept (..., k) bool or None.

    The weights are fitted with every chosen code and only then is a masked code's term removed: a
    refit would let the kept codes take over the masked code's direction, which is what a mask must
    stop. Differentiable in both h and the codes, so no straight-through term is needed.
    """
    weights = least_squares_weights(chosen, h)  # (..., k)
    if kept is not None:
        weights = weights * kept.to(weights.dtype)
    return (weights.unsqueeze(-1) * chosen.float()).sum(dim=-2).to(h.dtype)


# "pursuit" chooses its codes by orthogonal matching pursuit (see `pursuit`); its output is the same
# least-squares fit as "projection".
COMBINATIONS = {"mean": combine_mean, "projection": combine_projection, "pursuit": combine_projection}


class CodebookBottleneck(nn.Module):
    """C learnable codes; each token keeps k codes (the most cosine-similar, or chosen by pursuit) and
    is replaced by their combination (mean or least-squares fit; optionally rescaled to the input's
    norm, optionally through an SAE)."""

    def __init__(self, hidden_dim: int, config: BottleneckConfig) -> None:
        super().__init__()
        config.validate()
        self.config = config
        self.hidden_dim = hidden_dim
        code_dim = hidden_dim
        if config.use_sae:
            code_dim = config.sae_dim or 4 * hidden_dim
            self.encoder = nn.Linear(hidden_dim, code_dim)
            self.decoder = nn.Linear(code_dim, hidden_dim)
            with torch.no_grad():  # start near the identity: decoder inverts the encoder
                self.decoder.weight.copy_(torch.linalg.pinv(self.encoder.weight))
                self.decoder.bias.copy_(-self.decoder.weight @ self.encoder.bias)
        self.code_dim = code_dim
        self.codes = nn.Parameter(torch.randn(config.n_codes, code_dim) / code_dim**0.5)
        self.register_buffer("mask", torch.zeros(config.n_codes, dtype=torch.bool))
        self._any_masked = False  # mirrors mask.any(); set by set_masked and after load_state_dict
        self.register_load_state_dict_post_hook(_after_load)
        # search="grouped": the grouping is rebuilt whenever the codes change, except while
        # `holding_groups` (training), where only `reset_codes` regroups; the index (centroids, codes
        # by group) follows every change of codes or mask
        self._groups: torch.Tensor | None = None  # (G, S) code ids
        self._groups_key: tuple[int, int] | None = None
        self._index: CodeIndex | None = None
        self._index_key: tuple[int, int, int] | None = None
        self._holding_groups = False
        self._units: torch.Tensor | None = None
        self._units_key: tuple[int, int] | None = None
        # context gate: per sequence, the tokens gated at mask_gate so far, carried from a forward over
        # whole sequences to the cached decoding steps that extend them (B,)
        self._gated_so_far: torch.Tensor | None = None
        # mask_condition="prompt": the mask's topic detectors as x . w + c >= 0 (S, d) and (S,), set
        # with the mask; inside `prompted`, each row's prompt length (None: the whole first forward)
        # and whether its prompt was flagged, carried to the cached decoding steps that extend it (B,)
        self._detector_weight: torch.Tensor | None = None
        self._detector_offset: torch.Tensor | None = None
        self._prompting = False
        self._prompt_lengths: torch.Tensor | None = None
        self._prompt_flags: torch.Tensor | None = None

    @property
    def n_codes(self) -> int:
        return self.config.n_codes

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The vector codes are compared with: x itself, or the SAE's ReLU features. (..., d) -> (..., e)"""
        return F.relu(self.encoder(x)) if self.config.use_sae else x

    @torch.no_grad()
    def select(self, h: torch.Tensor) -> torch.Tensor:
        """Top-k code ids by cosine similarity, with masked codes excluded under `next_best`.

        Memory stays bounded whatever the sizes: at most chunk_tokens x chunk_codes similarities at
        a time (chunk_codes 0: all codes), each code chunk's top-k merged into a running top-k.
        With coarse_candidates m > 0 the ranking runs in bf16 and the best m are re-ranked in fp32.
        With search="grouped" only the codes of each token's search_probes best groups are compared
        (codeunlearn.model.code_index).

        Args:
            h: (N, e) encoded vectors.
        Returns:
            (N, k) int64 code ids, most similar first.
        """
        codes = self._unit_codes()  # (C, e)
        # A Python flag rather than mask.any(): reading the mask would sync with the device every call.
        excluded = self.mask if self.config.mask_policy == "next_best" and self._any_masked else None
        top_k = self.config.top_k
        if self.config.search == "grouped":
            return self._grouped_select(h, self._grouped_index(codes, excluded))
        chunks = []
        for chunk in h.split(self.config.chunk_tokens):
            units = F.normalize(chunk.float(), dim=-1)  # (n, e)
            if self.config.combine == "pursuit":
                chunks.append(pursuit(units, codes, excluded, top_k))
            elif self.config.coarse_candidates:
                chunks.append(self._coarse_then_exact(units, codes, excluded))
            else:
                chunks.append(_chunked_topk(units, codes, excluded, top_k, self.config.chunk_codes))
        return torch.cat(chunks) if chunks else h.new_zeros((0, top_k), dtype=torch.long)

    def _grouped_select(self, h: torch.Tensor, index: CodeIndex) -> torch.Tensor:
        """`select` by the grouped search, in chunks large enough to keep tile padding small."""
        probes, (n_groups, size) = self.config.search_probes, index.members.shape
        chunks = []
        for chunk in h.split(chunk_tokens(self.config.chunk_tokens, n_groups, size, probes)):
            units = F.normalize(chunk.float(), dim=-1)  # (n, e)
            tile = tile_size(units.shape[0] * probes, n_groups, size)
            chunks.append(grouped_topk(units, index, self.config.top_k, probes, tile))
        return torch.cat(chunks) if chunks else h.new_zeros((0, self.config.top_k), dtype=torch.long)

    @torch.no_grad()
    def code_ids(self, h: torch.Tensor) -> torch.Tensor:
        """The code ids `forward` reports for encoded vectors h (N, e): masked ones are NO_CODE under
        `zero`. For callers that only count codes and need no rebuilt vectors. (N, k) int64

        The N vectors are taken as unrelated tokens, so the context gate does not apply; for tokens of
        whole sequences use `select` and then `without_dropped` on the (B, T, k) ids.
        """
        ids = self.select(h)
        if self.config.mask_policy == "zero" and self._any_masked:
            ids = ids.masked_fill(self._dropped(ids)[0], NO_CODE)
        return ids

    @torch.no_grad()
    def without_dropped(self, ids: torch.Tensor) -> torch.Tensor:
        """Chosen ids (B, T, k) of whole sequences (position 0 first, NO_CODE at BOS and padding) with
        the slots the zero policy empties set to NO_CODE, as `forward` reports them."""
        if self.config.mask_policy == "zero" and self._any_masked:
            ids = ids.masked_fill(self._dropped(ids)[0], NO_CODE)
        return ids

    def set_search(self, search: str, probes: int | None = None, groups: int | None = None) -> None:
        """Switch the code search (`exact` or `grouped`, with its probes and groups) of a built model,
        e.g. to serve with grouped search a model trained with exact search.

        Raises:
            ConfigError: the settings are invalid for this codebook (see BottleneckConfig).
        """
        config = dataclasses.replace(
            self.config,
            search=search,
            search_probes=self.config.search_probes if probes is None else probes,
            search_groups=self.config.search_groups if groups is None else groups,
        )
        config.validate()
        self.config = config
        self._groups = self._index = None

    def set_mask_policy(
        self,
        policy: str,
        gate: int = 1,
        context_gate: int = 0,
        context_after: int = 1,
        condition: str = "none",
    ) -> None:
        """Switch what a masked code's slot gets (`next_best` code or `zero`, gated by `gate` masked
        codes per token, and by `context_gate` after `context_after` gated tokens of the same text, or
        by the mask's prompt detectors under `condition`="prompt") on a built model. Training never
        sees a mask, so a model trained under one policy serves under any.

        Raises:
            ConfigError: an unknown policy or condition, a gate outside [1, top_k] or with
                `next_best`, a context gate not below the gate, or the prompt condition without `zero`.
        """
        config = dataclasses.replace(
            self.config,
            mask_policy=policy,
            mask_gate=gate,
            mask_context_gate=context_gate,
            mask_context_after=context_after,
            mask_condition=condition,
        )
        config.validate()
        self.config = config
        self._gated_so_far = self._prompt_flags = None

    def set_detectors(self, detectors: Sequence[tuple[torch.Tensor | np.ndarray, float]]) -> None:
        """The prompt detectors of the mask in force, each as (w (d,), c): a prompt whose mean input
        x satisfies x . w + c >= 0 for any of them is the forgotten topic's (TopicDetector.as_linear).
        An empty list removes them."""
        if not detectors:
            self._detector_weight = self._detector_offset = None
            return
        device = self.codes.device
        self._detector_weight = torch.stack(
            [torch.as_tensor(w, dtype=torch.float32) for w, _ in detectors]
        ).to(device)
        self._detector_offset = torch.tensor([c for _, c in detectors], dtype=torch.float32, device=device)
        self._prompt_flags = None

    @contextlib.contextmanager
    def prompted(self, lengths: torch.Tensor | None = None) -> Iterator[None]:
        """Forwards inside are prompted text, for mask_condition="prompt": each row's first
        `lengths` (B,) tokens, BOS counted, are its prompt (scoring a continuation); None takes the
        whole of a forward that starts at BOS as the prompt and the cached decoding steps after it as
        its continuation (generation). Other conditions ignore it."""
        self._prompting, self._prompt_lengths, self._prompt_flags = True, lengths, None
        try:
            yield
        finally:
            self._prompting, self._prompt_lengths, self._prompt_flags = False, None, None

    @contextlib.contextmanager
    def holding_groups(self) -> Iterator[None]:
        """Keep the grouped search's grouping while the codes take small steps (training): regrouping
        every step would cost a tree build per step; `reset_codes` still regroups."""
        self._holding_groups = True
        try:
            yield
        finally:
            self._holding_groups = False
            self._groups = None  # the trained codes are grouped anew, as a loaded copy would be

    def _codes_key(self) -> tuple[int, int]:
        """Changes when the codes are edited in place through autograd's view (a re-seeding, a load,
        an edit under no_grad) or move. A fused optimizer step does not bump the version, hence
        `_forget_derived_codes` on every forward that may be followed by one."""
        return (self.codes._version, self.codes.data_ptr())

    def _forget_derived_codes(self) -> None:
        """Drop the unit codes and the index; regroup too unless groups are being held."""
        self._units_key = self._index_key = None
        if not self._holding_groups:
            self._groups = None

    def _unit_codes(self) -> torch.Tensor:
        """The codes as unit vectors (C, e), normalised once per change of the codes: a decoding step
        would otherwise read and write the whole codebook to select codes for a few tokens."""
        if self._units is None or self._units_key != self._codes_key():
            self._units = F.normalize(self.codes.detach().float(), dim=-1)
            self._units_key = self._codes_key()
        return self._units

    def _grouped_index(self, codes: torch.Tensor, excluded: torch.Tensor | None) -> CodeIndex:
        """The index of unit codes (C, e) for the grouped search, rebuilt only when codes or mask moved."""
        codes_key = self._codes_key()
        if self._groups is None or (not self._holding_groups and self._groups_key != codes_key):
            self._groups = balanced_groups(codes, self.config.n_search_groups)
            self._groups_key = codes_key
        index_key = (*codes_key, self.mask._version if excluded is not None else -1)
        if self._index is None or self._index_key != index_key:
            self._index = index_codes(codes, self._groups, excluded)
            self._index_key = index_key
        return self._index

    def _coarse_then_exact(
        self, units: torch.Tensor, codes: torch.Tensor, excluded: torch.Tensor | None
    ) -> torch.Tensor:
        """bf16 ranking of all codes keeps m candidates per token (n, m); fp32 cosines pick the top-k.

        bf16 rounds a cosine by up to ~0.004, so a true top-k code is lost only if m - k codes beat it
        by less than that; bench/bench_topk.py measures how often that happens.
        """
        with torch.autocast(units.device.type, enabled=False):
            candidates = _chunked_topk(
                units.bfloat16(),
                codes.bfloat16(),
                excluded,
                self.config.coarse_candidates,
                self.config.chunk_codes,
            )  # (n, m)
            exact = torch.einsum("ne,nme->nm", units, codes[candidates])  # (n, m) fp32 cosines
        if excluded is not None:
            exact.masked_fill_(excluded[candidates], float("-inf"))
        best = exact.topk(self.config.top_k, dim=-1).indices  # (n, k) positions among the candidates
        return candidates.gather(1, best)

    def forward(self, x: torch.Tensor, position_ids: torch.Tensor | None = None) -> BottleneckOutput:
        """Replace each vector of x (B, T, d) by the combination of its chosen codes.

        `position_ids` (from the decoder layer's call) tell a cached decoding step, which is one token
        past position 0, from a forward over whole sequences, whose first token is BOS.
        """
        batch, seq, _ = x.shape
        at_bos = _starts_at_bos(seq, position_ids)
        start = 1 if self.config.skip_first_token and at_bos else 0
        body = x[:, start:]  # (B, T', d)
        h = self.encode(body)
        ids = self.select(h.reshape(-1, self.code_dim)).view(batch, seq - start, -1)  # (B, T', k)
        if torch.is_grad_enabled():  # training: the optimizer step that follows may change the codes unseen
            self._forget_derived_codes()
        chosen = self.codes[ids]  # (B, T', k, e)
        kept = None
        if self.config.mask_policy == "zero" and self._any_masked:
            if self._prompting and self.config.mask_condition == "prompt":
                dropped = self._prompt_dropped(x, ids, start, at_bos)
            else:
                dropped, self._gated_so_far = self._dropped(ids, None if at_bos else self._gated_so_far)
            kept = ~dropped  # (B, T', k)
            ids = ids.masked_fill(~kept, NO_CODE)
        rebuilt = self._rebuild(chosen, h, kept)  # (B, T', d)
        if self.config.rescale == "input_norm":
            # The scale is the one the unmasked output would get, so that the kept codes are not scaled
            # up to make good a dropped code's share of the norm.
            unmasked = rebuilt if kept is None else self._rebuild(chosen, h, None)
            rebuilt = rebuilt * (
                body.norm(dim=-1, keepdim=True) / unmasked.norm(dim=-1, keepdim=True).clamp_min(1e-6)
            )
        recon = (rebuilt - body.detach()).pow(2).sum(-1) / body.detach().pow(2).sum(-1).clamp_min(1e-6)
        l1 = chosen.abs().mean(dim=(-1, -2)) if self.config.use_sae else torch.zeros_like(recon)
        return BottleneckOutput(
            hidden=torch.cat([x[:, :start], rebuilt.to(x.dtype)], dim=1),
            codes=F.pad(ids, (0, 0, start, 0), value=NO_CODE),
            recon_error=F.pad(recon, (start, 0)),
            l1=F.pad(l1, (start, 0)),
        )

    def _rebuild(self, chosen: torch.Tensor, h: torch.Tensor, kept: torch.Tensor | None) -> torch.Tensor:
        """The combination of the chosen codes (..., k, e) in the residual's space, before rescaling."""
        z = COMBINATIONS[self.config.combine](chosen, h, kept)  # (..., e)
        return self.decoder(z) if self.config.use_sae else z

    def _dropped(
        self, ids: torch.Tensor, gated_before: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Which chosen slots the zero policy empties, from ids (N, k) of unrelated tokens or (B, T, k)
        of sequences (NO_CODE slots never): the masked codes of every token that chose at least
        `mask_gate` masked codes, and, with the context gate, of every token that chose at least
        `mask_context_gate` and follows `mask_context_after` tokens of its sequence gated at mask_gate.

        Args:
            ids: chosen code ids.
            gated_before: (B,) tokens gated at mask_gate before this chunk of each sequence (a cached
                decoding step), or None for sequences that start here.
        Returns:
            The dropped slots, like ids, and for sequences under the context gate the count (B,) of
            tokens gated at mask_gate through the last one, else None.
        """
        config = self.config
        masked = self._masked_slots(ids)
        if config.mask_gate == 1:
            return masked, None
        hits = masked.sum(dim=-1)  # (..., T) masked codes each token chose
        gated = hits >= config.mask_gate
        if not config.mask_context_gate or ids.dim() != 3:
            return masked & gated.unsqueeze(-1), None
        count = gated.long()  # (B, T)
        carried = count.new_zeros(ids.shape[0])
        if gated_before is not None and gated_before.shape == carried.shape:
            carried = gated_before
        before = count.cumsum(dim=1) - count + carried.unsqueeze(1)  # gated tokens earlier in the text
        in_context = (before >= config.mask_context_after) & (hits >= config.mask_context_gate)
        return masked & (gated | in_context).unsqueeze(-1), carried + count.sum(dim=1)

    def _masked_slots(self, ids: torch.Tensor) -> torch.Tensor:
        """Which chosen slots hold a masked code, like ids (NO_CODE slots never)."""
        return self.mask[ids.clamp_min(0)] & (ids != NO_CODE)

    def _prompt_dropped(self, x: torch.Tensor, ids: torch.Tensor, start: int, at_bos: bool) -> torch.Tensor:
        """The slots emptied under mask_condition="prompt", like ids (B, T', k): in the rows whose
        prompt a detector flags, every slot at the prompt's tokens and the masked codes' slots at
        every later token; nothing in the other rows. x (B, T, d) is the bottleneck's input."""
        if self._detector_weight is None:
            raise CodeunlearnError(
                "bottleneck.mask_condition=prompt, but the mask in force carries no prompt detector: "
                "mine its topic with mining.detector_recall > 0 and unlearn again, or serve with "
                "bottleneck.mask_condition=none"
            )
        batch, seq, _ = x.shape
        in_prompt = torch.zeros(ids.shape[:2], dtype=torch.bool, device=ids.device)  # (B, T')
        if at_bos:
            lengths = self._prompt_lengths
            lengths = torch.full((batch,), seq) if lengths is None else torch.as_tensor(lengths)
            position = torch.arange(seq, device=x.device)
            prompt = (position[None, :] >= 1) & (position[None, :] < lengths.to(x.device)[:, None])  # (B, T)
            self._prompt_flags = self._flag_prompts(x, prompt)
            in_prompt = prompt[:, start:]
        flags = self._prompt_flags
        if flags is None or flags.shape[0] != batch:  # a cached step of no prompted forward: no prompt known
            return self._dropped(ids, None)[0]
        masked = self._masked_slots(ids)
        emptied = torch.where(in_prompt.unsqueeze(-1), ids != NO_CODE, masked)
        return emptied & flags[:, None, None]

    def _flag_prompts(self, x: torch.Tensor, prompt: torch.Tensor) -> torch.Tensor:
        """Whether any detector flags each row's prompt: its input x (B, T, d) averaged over the
        positions `prompt` (B, T) marks. A row with no prompt token is not flagged. (B,) bool"""
        weights = prompt.float()
        tokens = weights.sum(1, keepdim=True)  # (B, 1)
        means = (x.float() * weights.unsqueeze(-1)).sum(1) / tokens.clamp_min(1)  # (B, d)
        scores = means @ self._detector_weight.T + self._detector_offset  # (B, S)
        return (scores >= 0).any(-1) & (tokens.squeeze(1) > 0)

    @torch.no_grad()
    def reset_codes(self, code_ids: torch.Tensor, vectors: torch.Tensor) -> None:
        """Overwrite codes `code_ids` (n,) with `vectors` (n, e): initialisation and dead-code re-seeding."""
        self.codes[code_ids] = vectors.to(self.codes.dtype)
        self._groups = None  # regroup the grouped search, even while holding groups

    @torch.no_grad()
    def set_masked(self, code_ids: torch.Tensor) -> None:
        """Disable exactly these codes (replacing any earlier mask).

        Raises:
            CodeunlearnError: an id outside [0, C), or so many codes masked that fewer than k remain.
        """
        code_ids = torch.as_tensor(code_ids, dtype=torch.long).flatten()
        if code_ids.numel() and (code_ids.min() < 0 or code_ids.max() >= self.n_codes):
            raise CodeunlearnError(
                f"mask holds code ids in [{int(code_ids.min())}, {int(code_ids.max())}], but the codebook "
                f"has codes 0..{self.n_codes - 1}: the mask was built for another codebook"
            )
        mask = torch.zeros_like(self.mask)
        mask[code_ids.to(mask.device)] = True
        if self.n_codes - int(mask.sum()) < self.config.top_k:
            raise CodeunlearnError(
                f"masking {int(mask.sum())} of {self.n_codes} codes leaves fewer than top_k="
                f"{self.config.top_k} usable: mask fewer codes (mining.n_select)"
            )
        self.mask.copy_(mask)
        self._any_masked = bool(mask.any())
        self._gated_so_far = self._prompt_flags = None


def _chunked_topk(
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


def pursuit(
    units: torch.Tensor, codes: torch.Tensor, excluded: torch.Tensor | None, top_k: int
) -> torch.Tensor:
    """Orthogonal matching pursuit: top_k codes chosen one at a time, each the code most aligned
    (either sign) with what the codes chosen so far leave unexplained (the residual of their
    least-squares fit).

    Top-k by cosine picks k near-duplicates of the input's nearest code; pursuit picks codes that
    explain different parts of it, so the same k codes rebuild the input more closely
    (bench/bench_bottleneck_fidelity.py). Codes of either sign count: on SmolLM2's layer 20, choosing
    only positively aligned codes stopped improving past k = 8 (relative error 0.133 at k = 8, 0.123 at
    32, against 0.129 and 0.074 with both signs).

    Args:
        units: (n, e) unit vectors; codes: (C, e) unit codes; excluded: (C,) bool or None.
    Returns:
        (n, top_k) int64 code ids in the order chosen. Memory: one (n, C) score matrix at a time.
    """
    ids = torch.empty((units.shape[0], 0), dtype=torch.long, device=units.device)
    residual = units
    for _ in range(top_k):
        scores = (residual @ codes.T).abs()  # (n, C)
        if excluded is not None:
            scores.masked_fill_(excluded, float("-inf"))
        scores.scatter_(1, ids, float("-inf"))  # each code at most once
        ids = torch.cat([ids, scores.argmax(dim=-1, keepdim=True)], dim=1)  # (n, j)
        basis = codes[ids]  # (n, j, e)
        residual = units - (least_squares_weights(basis, units).unsqueeze(-1) * basis).sum(dim=-2)
    return ids


def _after_load(bottleneck: CodebookBottleneck, _incompatible_keys: object) -> None:
    """After load_state_dict: the loaded mask decides whether selection must exclude codes, and the
    loaded codes are grouped anew."""
    bottleneck._any_masked = bool(bottleneck.mask.any())
    bottleneck._groups = None


def _starts_at_bos(seq: int, position_ids: torch.Tensor | None) -> bool:
    """Whether index 0 of this forward is sequence position 0. Full forwards (seq > 1) are assumed to
    start at 0, so training never syncs with the device; a one-token forward is a decoding step unless
    its position is 0 (reading it syncs, as decoding does anyway)."""
    if position_ids is None or seq > 1:
        return True
    return int(position_ids.reshape(-1)[0]) == 0
