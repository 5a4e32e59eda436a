"""Tokenising examples and grouping them into padded batches of similar length."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

log = logging.getLogger(__name__)


@dataclass
class Batch:
    """Right-padded token ids; `rows` are the positions of these examples in the input list."""

    input_ids: torch.Tensor  # (B, T) int64
    attention_mask: torch.Tensor  # (B, T) int64, 1 on real tokens
    rows: torch.Tensor  # (B,) int64
    # (B, T) bool: the positions mining counts (see data/positions.py); None counts every content token
    count_mask: torch.Tensor | None = None

    def to(self, device: str | torch.device) -> Batch:
        count_mask = None if self.count_mask is None else self.count_mask.to(device)
        return Batch(self.input_ids.to(device), self.attention_mask.to(device), self.rows, count_mask)

    @property
    def n_tokens(self) -> int:
        return int(self.attention_mask.sum())


def bos_id(tokenizer: Any) -> int:
    """The token every example starts with, so position 0 never carries content."""
    token_id = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    if token_id is None:
        raise ValueError("the tokenizer has neither a BOS nor an EOS token to start examples with")
    return int(token_id)


def encode_texts(tokenizer: Any, texts: Sequence[str], max_length: int) -> list[list[int]]:
    """Token ids per text: BOS first, truncated to `max_length` tokens in all."""
    start = bos_id(tokenizer)
    encoded = tokenizer(list(texts), add_special_tokens=False)["input_ids"]
    n_cut = sum(len(ids) + 1 > max_length for ids in encoded)
    if n_cut:
        log.info(
            "%d of %d texts (%.1f%%) are longer than data.max_length=%d tokens and were cut to it",
            n_cut,
            len(encoded),
            100 * n_cut / len(encoded),
            max_length,
        )
    return [[start, *ids][:max_length] for ids in encoded]


def make_batches(
    token_ids: Sequence[Sequence[int]],
    batch_size: int,
    pad_id: int,
    count_flags: Sequence[Sequence[bool]] | None = None,
) -> list[Batch]:
    """Batches of examples sorted by length, so padding stays small; order of batches is by length.

    `count_flags`, one flag per token of each example, become the batches' `count_mask`.
    """
    if count_flags is not None and [len(f) for f in count_flags] != [len(ids) for ids in token_ids]:
        raise ValueError("count_flags must hold one flag per token of every example")
    order = sorted(range(len(token_ids)), key=lambda row: (len(token_ids[row]), row))
    batches = []
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        width = max(len(token_ids[row]) for row in rows)
        input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):
            ids = token_ids[row]
            input_ids[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
            attention_mask[i, : len(ids)] = 1
        count_mask = None
        if count_flags is not None:
            count_mask = torch.zeros((len(rows), width), dtype=torch.bool)
            for i, row in enumerate(rows):
                count_mask[i, : len(count_flags[row])] = torch.tensor(count_flags[row], dtype=torch.bool)
        batches.append(Batch(input_ids, attention_mask, torch.tensor(rows, dtype=torch.long), count_mask))
    return batches


def token_nll(logits: torch.Tensor, batch: Batch) -> torch.Tensor:
    """Per-token negative log-likelihood of each next token, zero on padding. (B, T-1)"""
    targets = batch.input_ids[:, 1:]
    nll = torch.nn.functional.cross_entropy(
        logits[:, :-1].float().reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="none"
    ).view_as(targets)
    return nll * batch.attention_mask[:, 1:]
