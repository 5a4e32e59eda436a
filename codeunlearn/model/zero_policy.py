"""Which chosen code slots the `zero` mask policy empties: the gates (a token's count of masked
codes, and the context gate over the earlier tokens of its text), the prompt condition (the mask's
detectors on a prompt) and the text condition (the detectors on the text so far).

Shapes: B batch, T tokens, k codes chosen per token; ids are chosen code ids, NO_CODE in unused slots.
"""

from __future__ import annotations

import torch

from codeunlearn.core.errors import CodeunlearnError
from codeunlearn.model.serving import PromptDetectors, PromptScope, ServingPolicy, TextScan

NO_CODE = -1  # code id reported for a zeroed slot or a position the bottleneck passes through


def masked_slots(mask: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """Which chosen slots hold a masked code (mask (C,) bool), like ids (NO_CODE slots never)."""
    return mask[ids.clamp_min(0)] & (ids != NO_CODE)


def gated_slots(
    mask: torch.Tensor, ids: torch.Tensor, policy: ServingPolicy, gated_before: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Which chosen slots the gates empty, from ids (N, k) of unrelated tokens or (B, T, k) of
    sequences (NO_CODE slots never): the masked codes of every token that chose at least `mask_gate`
    masked codes, and, with the context gate, of every token that chose at least `mask_context_gate`
    and follows `mask_context_after` tokens of its sequence gated at mask_gate.

    Args:
        mask: (C,) bool, the masked codes.
        ids: chosen code ids.
        policy: the gates in force.
        gated_before: (B,) tokens gated at mask_gate before this chunk of each sequence (a cached
            decoding step), or None for sequences that start here.
    Returns:
        The emptied slots, like ids, and for sequences under the context gate the count (B,) of
        tokens gated at mask_gate through the last one, else None.
    """
    masked = masked_slots(mask, ids)
    if policy.mask_gate == 1:
        return masked, None
    hits = masked.sum(dim=-1)  # (..., T) masked codes each token chose
    gated = hits >= policy.mask_gate
    if not policy.mask_context_gate or ids.dim() != 3:
        return masked & gated.unsqueeze(-1), None
    count = gated.long()  # (B, T)
    carried = count.new_zeros(ids.shape[0])
    if gated_before is not None and gated_before.shape == carried.shape:
        carried = gated_before
    before = count.cumsum(dim=1) - count + carried.unsqueeze(1)  # gated tokens earlier in the text
    in_context = (before >= policy.mask_context_after) & (hits >= policy.mask_context_gate)
    return masked & (gated | in_context).unsqueeze(-1), carried + count.sum(dim=1)


def prompt_slots(
    mask: torch.Tensor,
    detectors: PromptDetectors | None,
    scope: PromptScope,
    x: torch.Tensor,
    ids: torch.Tensor,
    start: int,
    at_bos: bool,
) -> torch.Tensor | None:
    """The slots emptied under mask_condition="prompt", like ids (B, T', k): in the rows whose
    prompt a detector flags, every slot at the prompt's tokens and the masked codes' slots at every
    later token; nothing in the other rows.

    A forward that starts at BOS judges each row's prompt and records the flags in `scope`; the cached
    decoding steps after it reuse them.

    Args:
        mask: (C,) bool, the masked codes.
        detectors: the mask's prompt detectors.
        scope: the prompts' lengths, and the flags carried from an earlier forward.
        x: (B, T, d) the bottleneck's input; ids: (B, T', k) chosen ids of positions start.. of x.
        start: positions of x passed through before ids begin (1 for BOS, else 0).
        at_bos: whether position 0 of x is the start of its sequence.
    Returns:
        The emptied slots, or None when no prompt is known (a cached step of no prompted forward):
        the caller then applies the gates.
    Raises:
        CodeunlearnError: the mask in force carries no prompt detector.
    """
    if detectors is None:
        raise CodeunlearnError(
            "bottleneck.mask_condition=prompt, but the mask in force carries no prompt detector: "
            "mine its topic with mining.detector_recall > 0 and unlearn again, or serve with "
            "bottleneck.mask_condition=none"
        )
    batch, seq, _ = x.shape
    in_prompt = torch.zeros(ids.shape[:2], dtype=torch.bool, device=ids.device)  # (B, T')
    if at_bos:
        lengths = torch.full((batch,), seq) if scope.lengths is None else torch.as_tensor(scope.lengths)
        position = torch.arange(seq, device=x.device)
        prompt = (position[None, :] >= 1) & (position[None, :] < lengths.to(x.device)[:, None])  # (B, T)
        scope.flags = detectors.flag(x, prompt)
        in_prompt = prompt[:, start:]
    flags = scope.flags
    if flags is None or flags.shape[0] != batch:
        return None
    emptied = torch.where(in_prompt.unsqueeze(-1), ids != NO_CODE, masked_slots(mask, ids))
    return emptied & flags[:, None, None]


def text_slots(
    mask: torch.Tensor,
    detectors: PromptDetectors,
    body: torch.Tensor,
    ids: torch.Tensor,
    detect_after: int,
    carried: TextScan | None,
) -> tuple[torch.Tensor, TextScan]:
    """The masked codes' slots that mask_condition="text" empties beside the gates, like ids (B, T', k):
    in each row, at every token from the first one where a detector flags the mean of the row's
    inputs so far (after BOS; not before `detect_after` of them).

    The mean score is the score of the mean (the detectors are linear), so a running sum of each
    token's score is all a cached decoding step needs.

    Args:
        mask: (C,) bool, the masked codes.
        detectors: the mask's topic detectors.
        body: (B, T', d) the bottleneck's input at the positions of ids (BOS left out).
        ids: (B, T', k) chosen code ids.
        detect_after: inputs a row's detectors read before they may flag it (mask_detect_after).
        carried: the reading through the previous forward of the same rows, or None where they start.
    Returns:
        The emptied slots, and the reading through this forward's last token.
    """
    batch, seq, _ = body.shape
    scores = body.float() @ detectors.weight.T  # (B, T', S)
    if carried is None or carried.sums.shape[0] != batch:
        carried = TextScan(
            scores.new_zeros(batch, scores.shape[-1]),
            scores.new_zeros(batch),
            torch.zeros(batch, dtype=torch.bool, device=body.device),
        )
    sums = scores.cumsum(dim=1) + carried.sums.unsqueeze(1)
    count = torch.arange(1, seq + 1, device=body.device, dtype=scores.dtype) + carried.count.unsqueeze(1)
    hit = ((sums / count.unsqueeze(-1) + detectors.offset) >= 0).any(-1) & (count >= detect_after)
    flagged = hit.cummax(dim=1).values | carried.flagged.unsqueeze(1)  # (B, T')
    if seq:
        carried = TextScan(sums[:, -1], count[:, -1], flagged[:, -1])
    return masked_slots(mask, ids) & flagged.unsqueeze(-1), carried
