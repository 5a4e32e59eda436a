"""The discrete codebook bottleneck: every hidden vector is rebuilt from its top-k codes.

The module holds what is saved with the model (the codes and the mask of disabled codes) and the
config it was built with. How it searches codes and treats masked ones while serving
is a `ServingPolicy` put in force with `serve`; that, the mask's prompt detectors and the state a
forward carries to cached decoding steps live in one `ServingState`, which is never saved.

Shapes: B batch, T tokens, d hidden width (the codes' width too), C codes, k codes chosen per token.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from codeunlearn.core.config import BottleneckConfig
from codeunlearn.core.errors import CodeunlearnError
from codeunlearn.model.code_search import CodeSearch, routed_topk
from codeunlearn.model.combine import COMBINATIONS
from codeunlearn.model.serving import PromptDetectors, PromptScope, ServingPolicy, ServingState
from codeunlearn.model.zero_policy import NO_CODE, gated_slots, prompt_slots, text_slots

if TYPE_CHECKING:
    import numpy as np


@dataclass
class BottleneckOutput:
    """What one bottleneck call produced; the caller reduces the per-token terms over its own mask."""

    hidden: torch.Tensor  # (B, T, d) the vector that replaces the input downstream
    codes: torch.Tensor  # (B, T, k) int64 chosen code ids, NO_CODE where none was used
    recon_error: torch.Tensor  # (B, T) ||x' - x||^2 / ||x||^2, zero at passed-through positions
    # (B, T) under `routed`: how far codes a token may not choose reach into its top k (see `routed`)
    route_error: torch.Tensor | None = None


class CodebookBottleneck(nn.Module):
    """C learnable codes; each token keeps k codes (the most cosine-similar, or chosen by pursuit) and
    is replaced by their combination (mean or least-squares fit; optionally rescaled to the input's
    norm).

    `config` is the configuration the bottleneck was built (or loaded) with; its search and mask
    fields are only the policy it serves under until `serve` puts another in force (see `policy`).
    """

    def __init__(self, hidden_dim: int, config: BottleneckConfig) -> None:
        super().__init__()
        config.validate()
        self.config = config
        self.hidden_dim = hidden_dim
        self.codes = nn.Parameter(torch.randn(config.n_codes, hidden_dim) / hidden_dim**0.5)
        self.register_buffer("mask", torch.zeros(config.n_codes, dtype=torch.bool))
        self.register_load_state_dict_post_hook(_after_load)
        self._search = CodeSearch()
        self._serving = ServingState(ServingPolicy.of(config))
        self._routes: torch.Tensor | None = None  # (B, C) bool while `routed`: the codes each row may choose
        self._route_margin = 0.0

    @property
    def n_codes(self) -> int:
        return self.config.n_codes

    @property
    def policy(self) -> ServingPolicy:
        """The code search and mask policy in force."""
        return self._serving.policy

    def serve(self, policy: ServingPolicy) -> None:
        """Serve under `policy` from the next forward on: e.g. with grouped search a model trained with
        exact search, or under any mask policy (training never sees a mask, so a model trained under
        one policy serves under any). Nothing carried from earlier forwards applies after it.

        Raises:
            ConfigError: the settings are invalid for this codebook (see BottleneckConfig); the
                policy in force is then unchanged.
        """
        policy.applied_to(self.config)
        if policy.search_settings != self._serving.policy.search_settings:
            self._search.forget_index()
        self._serving.policy = policy
        self._serving.forget_carried()

    @torch.no_grad()
    def select(self, h: torch.Tensor) -> torch.Tensor:
        """Top-k code ids by cosine similarity, with masked codes excluded under `next_best`.

        Memory stays bounded whatever the sizes: at most chunk_tokens x chunk_codes similarities at
        a time (chunk_codes 0: all codes), each code chunk's top-k merged into a running top-k.
        With coarse_candidates m > 0 the ranking runs in bf16 and the best m are re-ranked in fp32.
        With search="grouped" only the codes of each token's search_probes best groups are compared
        (codeunlearn.model.code_index).

        Args:
            h: (N, d) input vectors.
        Returns:
            (N, k) int64 code ids, most similar first.
        """
        policy = self._serving.policy
        is_excluding = policy.mask_policy == "next_best" and self._search.is_any_masked(self.mask)
        return self._search.select(self.codes, h, self.mask if is_excluding else None, self.config, policy)

    @torch.no_grad()
    def code_ids(self, h: torch.Tensor) -> torch.Tensor:
        """The code ids `forward` reports for input vectors h (N, d): masked ones are NO_CODE under
        `zero`. For callers that only count codes and need no rebuilt vectors. (N, k) int64

        The N vectors are taken as unrelated tokens, so the context gate does not apply; for tokens of
        whole sequences use `select` and then `without_dropped` on the (B, T, k) ids.
        """
        return self.without_dropped(self.select(h))

    @torch.no_grad()
    def without_dropped(self, ids: torch.Tensor) -> torch.Tensor:
        """Chosen ids (B, T, k) of whole sequences (position 0 first, NO_CODE at BOS and padding), or
        (N, k) of unrelated tokens, with the slots the zero policy empties set to NO_CODE, as
        `forward` reports them."""
        if self._is_dropping():
            ids = ids.masked_fill(self._dropped(ids)[0], NO_CODE)
        return ids

    def set_detectors(self, detectors: Sequence[tuple[torch.Tensor | np.ndarray, float]]) -> None:
        """The prompt detectors of the mask in force, each as (w (d,), c): a prompt whose mean input
        x satisfies x . w + c >= 0 for any of them is the forgotten topic's (TopicDetector.as_linear).
        An empty list removes them."""
        if not detectors:
            self._serving.detectors = None
            return
        self._serving.detectors = PromptDetectors.stacked(detectors, self.codes.device)
        self._serving.forget_carried()

    @contextlib.contextmanager
    def prompted(self, lengths: torch.Tensor | None = None) -> Iterator[None]:
        """Forwards inside are prompted text, for mask_condition="prompt": each row's first
        `lengths` (B,) tokens, BOS counted, are its prompt (scoring a continuation); None takes the
        whole of a forward that starts at BOS as the prompt and the cached decoding steps after it as
        its continuation (generation). Other conditions ignore it."""
        self._serving.prompt = PromptScope(lengths)
        try:
            yield
        finally:
            self._serving.prompt = None

    @contextlib.contextmanager
    def routed(self, allowed: torch.Tensor, margin: float = 0.0) -> Iterator[None]:
        """Forwards inside choose each row's codes among `allowed` (B, C) bool only: training's code
        routes (codeunlearn.training.code_routes). Exact search; the mask does not apply.

        Serving chooses among all codes, so each forward also reports as `route_error` the sum, over
        the codes a token may not choose, of how far each one's similarity reaches above the token's
        k-th allowed similarity less `margin`: a loss that pushes a code out of the reach of the
        tokens that may not choose it, so that serving chooses what training did.
        """
        self._routes, self._route_margin = allowed, margin
        try:
            yield
        finally:
            self._routes = None

    def holding_groups(self) -> contextlib.AbstractContextManager[None]:
        """Keep the grouped search's grouping while the codes take small steps (training): regrouping
        every step would cost a tree build per step; `reset_codes` still regroups."""
        return self._search.holding_groups()

    def forward(self, x: torch.Tensor, position_ids: torch.Tensor | None = None) -> BottleneckOutput:
        """Replace each vector of x (B, T, d) by the combination of its chosen codes.

        `position_ids` (from the decoder layer's call) tell a cached decoding step, which is one token
        past position 0, from a forward over whole sequences, whose first token is BOS.
        """
        batch, seq, _ = x.shape
        at_bos = _starts_at_bos(seq, position_ids)
        start = 1 if self.config.skip_first_token and at_bos else 0
        body = x[:, start:]  # (B, T', d)
        route_error = None
        if self._routes is not None:
            ids, route_error = self._routed_select(body)  # (B, T', k), (B, T')
        else:
            ids = self.select(body.reshape(-1, self.hidden_dim)).view(batch, seq - start, -1)  # (B, T', k)
        if torch.is_grad_enabled():  # training: the optimizer step that follows may change the codes unseen
            self._search.forget_derived_codes()
        chosen = self.codes[ids]  # (B, T', k, d)
        kept = None
        if self._is_dropping():
            kept = ~self._forward_dropped(x, ids, start, at_bos)  # (B, T', k)
            ids = ids.masked_fill(~kept, NO_CODE)
        rebuilt = self._rebuild(chosen, body, kept)  # (B, T', d)
        if self.config.rescale == "input_norm":
            # The scale is the one the unmasked output would get, so that the kept codes are not scaled
            # up to make good a dropped code's share of the norm.
            unmasked = rebuilt if kept is None else self._rebuild(chosen, body, None)
            rebuilt = rebuilt * (
                body.norm(dim=-1, keepdim=True) / unmasked.norm(dim=-1, keepdim=True).clamp_min(1e-6)
            )
        recon = (rebuilt - body.detach()).pow(2).sum(-1) / body.detach().pow(2).sum(-1).clamp_min(1e-6)
        return BottleneckOutput(
            hidden=torch.cat([x[:, :start], rebuilt.to(x.dtype)], dim=1),
            codes=F.pad(ids, (0, 0, start, 0), value=NO_CODE),
            recon_error=F.pad(recon, (start, 0)),
            route_error=None if route_error is None else F.pad(route_error, (start, 0)),
        )

    def _routed_select(self, body: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Top-k code ids (B, T', k) of body (B, T', d), each row among its routes' allowed codes, and
        each token's route error (B, T'), differentiable in the codes (see `routed`)."""
        batch, seq, _ = body.shape
        units = F.normalize(body.detach().reshape(-1, self.hidden_dim).float(), dim=-1)  # (N, d)
        allowed = self._routes.to(body.device).repeat_interleave(seq, dim=0)  # (N, C)
        sims = units @ F.normalize(self.codes.float(), dim=-1).T  # (N, C), with the codes' gradient
        ids, kth = routed_topk(sims.detach(), allowed, self.config.top_k)
        reach = (sims - kth.unsqueeze(1) + self._route_margin).clamp_min(0).masked_fill(allowed, 0.0)
        return ids.view(batch, seq, -1), reach.sum(-1).view(batch, seq)

    def _rebuild(self, chosen: torch.Tensor, h: torch.Tensor, kept: torch.Tensor | None) -> torch.Tensor:
        """The combination of the chosen codes (..., k, d), before rescaling."""
        return COMBINATIONS[self.config.combine](chosen, h, kept)  # (..., d)

    def _is_dropping(self) -> bool:
        """Whether masked codes' slots are emptied now: the zero policy, with some code masked."""
        # The cached flag rather than mask.any(): reading the mask would sync with the device every call.
        return self._serving.policy.drops_slots and self._search.is_any_masked(self.mask)

    def _forward_dropped(self, x: torch.Tensor, ids: torch.Tensor, start: int, at_bos: bool) -> torch.Tensor:
        """The slots a forward empties, like ids (B, T', k): by the prompt detectors inside `prompted`
        under mask_condition="prompt", else by the gates, carrying the context gate's count, and under
        mask_condition="text" also by the detectors on the text so far, carrying their reading."""
        serving = self._serving
        if serving.prompt is not None and serving.policy.mask_condition == "prompt":
            dropped = prompt_slots(self.mask, serving.detectors, serving.prompt, x, ids, start, at_bos)
            if dropped is not None:
                return dropped
            return self._dropped(ids, None)[0]  # a cached step of no prompted forward: no prompt known
        dropped, serving.gated_so_far = self._dropped(ids, None if at_bos else serving.gated_so_far)
        if serving.policy.mask_condition == "text" and serving.detectors is not None:
            flagged, serving.text_scan = text_slots(
                self.mask,
                serving.detectors,
                x[:, start:],
                ids,
                serving.policy.mask_detect_after,
                None if at_bos else serving.text_scan,
            )
            dropped = dropped | flagged
        return dropped

    def _dropped(
        self, ids: torch.Tensor, gated_before: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The slots the gates of the policy in force empty (zero_policy.gated_slots); one method, so
        that a study may put another rule in its place (scripts/knowledge_locality.py)."""
        return gated_slots(self.mask, ids, self._serving.policy, gated_before)

    @torch.no_grad()
    def reset_codes(self, code_ids: torch.Tensor, vectors: torch.Tensor) -> None:
        """Overwrite codes `code_ids` (n,) with `vectors` (n, d): initialisation and dead-code re-seeding."""
        self.codes[code_ids] = vectors.to(self.codes.dtype)
        self._search.regroup()  # even while holding groups

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
        self._serving.forget_carried()


def _after_load(bottleneck: CodebookBottleneck, _incompatible_keys: object) -> None:
    """After load_state_dict: the loaded codes are grouped anew (the loaded mask's version moved, so
    whether selection must exclude codes is read again)."""
    bottleneck._search.regroup()


def _starts_at_bos(seq: int, position_ids: torch.Tensor | None) -> bool:
    """Whether index 0 of this forward is sequence position 0. Full forwards (seq > 1) are assumed to
    start at 0, so training never syncs with the device; a one-token forward is a decoding step unless
    its position is 0 (reading it syncs, as decoding does anyway)."""
    if position_ids is None or seq > 1:
        return True
    return int(position_ids.reshape(-1)[0]) == 0
