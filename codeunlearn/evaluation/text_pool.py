"""A pool of held-out texts scored once per model and re-scored only where a mask can change them.

Calibration scores many masks on the same validation texts, and a sweep scores every topic on texts
other topics share, so each text's base and codebook NLL, its residual at the bottleneck site and the
codes the bottleneck chooses for it are computed once. A masked score then runs only the layers above
the site, and only on the texts where the mask holds one of the codes chosen for them: on any other
text the bottleneck chooses exactly what it chose without the mask, so its NLL is the codebook's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from codeunlearn.core.progress import progress
from codeunlearn.data.batching import Batch, encode_texts, make_batches, token_nll
from codeunlearn.model.bottleneck import NO_CODE
from codeunlearn.model.surgery import (
    CodebookModel,
    bypassed,
    forward_from_site,
    forward_to_site,
    upper_logits,
)
from codeunlearn.unlearning.masks import Mask, apply_mask


@dataclass(frozen=True)
class PoolScores:
    """Summed NLL and scored-token count per requested text, in the order asked."""

    sums: np.ndarray
    counts: np.ndarray

    def mean(self, rows: np.ndarray | slice | None = None) -> float:
        """Token-weighted mean NLL over `rows` (positions in the order asked; None: all)."""
        sums, counts = (self.sums, self.counts) if rows is None else (self.sums[rows], self.counts[rows])
        return float(sums.sum() / max(counts.sum(), 1))


class TextPool:
    """Texts by id with their cached scores under one codebook model and one base model."""

    def __init__(
        self,
        codebook_model: CodebookModel,
        base_model: nn.Module,
        max_length: int,
        batch_size: int = 32,
        shared_lower: bool = False,
    ) -> None:
        """`shared_lower`: the codebook model's layers below the bottleneck are the base model's (they
        were frozen in training: train.mode frozen or above), so the base model runs from the cached
        site residual up instead of from the tokens."""
        self.codebook_model = codebook_model
        self.base_model = base_model
        self.shared_lower = shared_lower
        self.max_length = max_length
        self.batch_size = batch_size
        self._row: dict[str, int] = {}
        self._tokens: list[list[int]] = []
        self._hidden: list[torch.Tensor] = []  # (T_i, d) residual at the site, before the bottleneck
        self._codes: list[np.ndarray] = []  # unique code ids the bottleneck chooses for text i
        self._base: list[tuple[float, float]] = []
        self._codebook: list[tuple[float, float]] = []
        self.rescored_texts = 0  # texts a mask made us run again (a measure of what skipping saves)

    def __len__(self) -> int:
        return len(self._row)

    def add(self, ids: Sequence[str], texts: Sequence[str], desc: str = "scoring held-out texts") -> int:
        """Score the texts not yet in the pool (ids already present are skipped); returns how many."""
        new = {i: t for i, t in zip(ids, texts, strict=True) if i not in self._row}
        if not new:
            return 0
        tokens = encode_texts(self.codebook_model.tokenizer, list(new.values()), self.max_length)
        first = len(self._tokens)
        for offset, text_id in enumerate(new):
            self._row[text_id] = first + offset
        self._tokens += tokens
        self._hidden += [torch.empty(0)] * len(tokens)
        self._codes += [np.empty(0, dtype=np.int64)] * len(tokens)
        self._base += [(0.0, 0.0)] * len(tokens)
        self._codebook += [(0.0, 0.0)] * len(tokens)
        apply_mask(self.codebook_model, None)  # the cached scores are the unmasked model's
        for batch in progress(self._batches(range(first, first + len(tokens))), desc=desc):
            self._score_new(batch)
        return len(tokens)

    def rows(self, ids: Sequence[str]) -> np.ndarray:
        """Pool rows of `ids`; KeyError names the first id never added."""
        return np.array([self._row[i] for i in ids], dtype=np.int64)

    def base(self, ids: Sequence[str]) -> PoolScores:
        return self._cached(self._base, self.rows(ids))

    def codebook(self, ids: Sequence[str]) -> PoolScores:
        return self._cached(self._codebook, self.rows(ids))

    @torch.no_grad()
    def masked(self, ids: Sequence[str], mask: Mask) -> PoolScores:
        """NLL of `ids` with `mask` in force: rerun where the mask meets a text's codes, cached elsewhere."""
        rows = self.rows(ids)
        scores = self._cached(self._codebook, rows)
        masked_codes = np.asarray(mask.code_ids, dtype=np.int64)
        hit = [i for i, row in enumerate(rows) if np.isin(self._codes[row], masked_codes).any()]
        if not hit:
            return scores
        cm = self.codebook_model
        apply_mask(cm, mask)
        try:
            for batch in self._batches([int(rows[i]) for i in hit]):
                sums, counts = self._upper_nll(batch)
                for slot, (total, count) in enumerate(zip(sums, counts, strict=True)):
                    position = hit[int(batch.rows[slot])]
                    scores.sums[position], scores.counts[position] = total, count
        finally:
            apply_mask(cm, None)
        self.rescored_texts += len(hit)
        return scores

    # ------------------------------------------------------------ internals

    def _batches(self, rows: Sequence[int]) -> list[Batch]:
        """Batches over pool `rows`; each batch's `rows` index into `rows` (as make_batches numbers them)."""
        rows = list(rows)
        pad = self.codebook_model.tokenizer.pad_token_id
        batches = make_batches([self._tokens[r] for r in rows], self.batch_size, pad)
        return [
            _Pooled(b.input_ids, b.attention_mask, b.rows, None, [rows[i] for i in b.rows]) for b in batches
        ]

    @torch.no_grad()
    def _score_new(self, batch: _Pooled) -> None:
        cm, device = self.codebook_model, self.codebook_model.device
        input_ids, attention = batch.input_ids.to(device), batch.attention_mask.to(device)
        with bypassed(cm):
            hidden, _ = forward_to_site(cm, input_ids, attention)
            if self.shared_lower:
                base_logits = upper_logits(self.base_model, cm.layer, hidden, attention)
            else:
                base_logits = self.base_model(input_ids=input_ids, attention_mask=attention).logits
        base_sums, base_counts = _summed(token_nll(base_logits.float(), batch.to(device)), batch)
        out = cm.bottleneck(hidden)
        logits = forward_from_site(cm, out.hidden, attention)
        sums, counts = _summed(token_nll(logits.float(), batch.to(device)), batch)
        real = attention.bool()
        for slot, row in enumerate(batch.pool_rows):
            length = int(real[slot].sum())
            self._hidden[row] = hidden[slot, :length].cpu()
            codes = out.codes[slot, :length]
            self._codes[row] = np.unique(codes[codes != NO_CODE].cpu().numpy())
            self._base[row] = (float(base_sums[slot]), float(base_counts[slot]))
            self._codebook[row] = (float(sums[slot]), float(counts[slot]))

    def _upper_nll(self, batch: _Pooled) -> tuple[np.ndarray, np.ndarray]:
        """Summed NLL per text of a batch, from the cached site residuals up (the mask in force)."""
        cm, device = self.codebook_model, self.codebook_model.device
        width = batch.input_ids.shape[1]
        d = self._hidden[batch.pool_rows[0]].shape[-1]
        hidden = torch.zeros(len(batch.pool_rows), width, d)
        for slot, row in enumerate(batch.pool_rows):
            cached = self._hidden[row]
            hidden[slot, : cached.shape[0]] = cached
            hidden[slot, cached.shape[0] :] = cached[-1]  # finite padding: a zero vector has no direction
        hidden, attention = hidden.to(device), batch.attention_mask.to(device)
        logits = forward_from_site(cm, cm.bottleneck(hidden).hidden, attention)
        return _summed(token_nll(logits.float(), batch.to(device)), batch)

    @staticmethod
    def _cached(values: list[tuple[float, float]], rows: np.ndarray) -> PoolScores:
        pairs = np.array([values[r] for r in rows], dtype=np.float64).reshape(-1, 2)
        return PoolScores(pairs[:, 0].copy(), pairs[:, 1].copy())


@dataclass
class _Pooled(Batch):
    """A batch that also knows the pool row of each of its examples."""

    pool_rows: list[int] | None = None

    def to(self, device: str | torch.device) -> Batch:
        return Batch(self.input_ids.to(device), self.attention_mask.to(device), self.rows)


def _summed(nll: torch.Tensor, batch: Batch) -> tuple[np.ndarray, np.ndarray]:
    """Per-example summed NLL and number of predicted tokens of a (B, T-1) token NLL."""
    scored = batch.attention_mask[:, 1:].to(nll.device)
    return (nll * scored).sum(1).cpu().numpy(), scored.sum(1).cpu().numpy()
