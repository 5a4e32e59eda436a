"""Mining: run the codebook model up to its bottleneck and count which codes fire on a set of examples."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

from codeunlearn.core.progress import progress
from codeunlearn.data.batching import Batch
from codeunlearn.model.bottleneck import NO_CODE
from codeunlearn.model.surgery import CodebookModel, bypassed, forward_to_site
from codeunlearn.unlearning.selection import CodeCounts

log = logging.getLogger(__name__)


def batch_code_counts(
    codes: torch.Tensor, attention_mask: torch.Tensor, n_codes: int, count_mask: torch.Tensor | None = None
) -> tuple[torch.Tensor, ...]:
    """Token and example firing counts for one batch, on the codes' device.

    Args:
        codes: (B, T, k) code ids, NO_CODE where none.
        attention_mask: (B, T) 1 on real tokens.
        count_mask: (B, T) bool, the only positions to count (e.g. a word topic's words); None: all.
    Returns:
        token_counts (C,), example_counts (C,), and the number of content tokens counted.
    """
    valid = attention_mask.bool().clone()
    valid[:, 0] = False  # BOS passes through the bottleneck and carries no content
    if count_mask is not None:
        valid &= count_mask
    fired = codes.masked_fill(~valid.unsqueeze(-1), NO_CODE)  # (B, T, k)
    flat = fired[fired != NO_CODE]
    token_counts = torch.bincount(flat, minlength=n_codes)
    # Example counts: mark each (example, code) pair once; NO_CODE (-1) lands in the spare last column.
    batch = codes.shape[0]
    rows = torch.arange(batch, device=codes.device).view(batch, 1, 1).expand_as(fired)
    seen = torch.zeros(batch, n_codes + 1, dtype=torch.bool, device=codes.device)
    seen[rows.reshape(-1), fired.reshape(-1) % (n_codes + 1)] = True
    example_counts = seen[:, :n_codes].sum(0)  # an example with no counted position adds nothing
    return token_counts, example_counts, valid.sum()


@torch.no_grad()
def count_codes(codebook_model: CodebookModel, batches: list[Batch], desc: str = "mining") -> CodeCounts:
    """Count code firings over `batches`, computing only the layers up to the bottleneck.

    Codes are chosen for content tokens only (no padding, no BOS) and never turned back into vectors;
    counts stay on the device until the end. On a GPU the layers run under bf16 autocast, as in training.
    """
    n_codes = codebook_model.bottleneck.n_codes
    device = codebook_model.device
    token_counts = torch.zeros(n_codes, dtype=torch.long, device=device)
    example_counts = torch.zeros(n_codes, dtype=torch.long, device=device)
    n_tokens = torch.zeros((), dtype=torch.long, device=device)
    n_examples = 0
    for batch in progress(batches, desc=desc):
        batch = batch.to(device)
        codes = site_codes(codebook_model, batch)
        tokens, examples, counted = batch_code_counts(codes, batch.attention_mask, n_codes, batch.count_mask)
        token_counts += tokens
        example_counts += examples
        n_tokens += counted
        # with a count mask, only the examples that have a counted position (no host sync here)
        n_examples = n_examples + (
            batch.input_ids.shape[0] if batch.count_mask is None else batch.count_mask.any(1).sum()
        )
    return CodeCounts(
        token_counts=token_counts.cpu().numpy().astype(np.int64),
        example_counts=example_counts.cpu().numpy().astype(np.int64),
        n_tokens=int(n_tokens),
        n_examples=int(n_examples),
    )


@torch.no_grad()
def site_codes(codebook_model: CodebookModel, batch: Batch) -> torch.Tensor:
    """Code ids at every position of a batch (B, T, k): those the bottleneck chooses at content tokens,
    NO_CODE at BOS and padding. Runs layers 0..layer only; `batch` must be on the model's device."""
    bottleneck = codebook_model.bottleneck
    content = batch.attention_mask.bool().clone()
    content[:, 0] = False  # BOS passes through the bottleneck
    codes = torch.full((*content.shape, bottleneck.config.top_k), NO_CODE, device=content.device)
    device_type = codebook_model.device.type
    with bypassed(codebook_model), torch.autocast(device_type, torch.bfloat16, enabled=device_type == "cuda"):
        hidden, _ = forward_to_site(codebook_model, batch.input_ids, batch.attention_mask)  # (B, T, d)
        codes[content] = bottleneck.select(hidden[content])  # (N, k), N content tokens
    return bottleneck.without_dropped(codes)  # over whole sequences, for the context gate


@dataclass(frozen=True)
class TextFirings:
    """Code firings per text: one row per (text, code) that fired, and the content tokens of each text."""

    text_rows: np.ndarray  # (F,) index into the texts counted
    code_ids: np.ndarray  # (F,)
    token_counts: np.ndarray  # (F,) content tokens of the text where the code was among the top-k
    n_tokens: np.ndarray  # (N,) content tokens counted per text


@torch.no_grad()
def text_firings(
    codebook_model: CodebookModel, batches: list[Batch], desc: str = "counting codes"
) -> TextFirings:
    """Count code firings per text (every content token; `count_mask` is not supported here)."""
    n_texts = sum(len(b.rows) for b in batches)
    rows, codes, tokens = [], [], []
    n_tokens = np.zeros(n_texts, dtype=np.int64)
    for batch in progress(batches, desc=desc):
        if batch.count_mask is not None:
            raise ValueError("text_firings counts every content token; use count_codes for a count mask")
        chosen = site_codes(codebook_model, batch.to(codebook_model.device)).cpu()  # (B, T, k)
        for slot, row in enumerate(batch.rows.tolist()):
            fired = chosen[slot][chosen[slot] != NO_CODE].numpy()
            ids, counts = np.unique(fired, return_counts=True)
            rows.append(np.full(len(ids), row, dtype=np.int64))
            codes.append(ids.astype(np.int64))
            tokens.append(counts.astype(np.int64))
            n_tokens[row] = max(int(batch.attention_mask[slot].sum()) - 1, 0)  # BOS carries no content
    empty = np.empty(0, dtype=np.int64)
    return TextFirings(
        np.concatenate(rows) if rows else empty,
        np.concatenate(codes) if codes else empty,
        np.concatenate(tokens) if tokens else empty,
        n_tokens,
    )
