"""Evaluation: held-out NLL per split and per topic for base, codebook and masked models.

The layers below the bottleneck are shared by every codebook variant (mask or no mask), so their
output is computed once per evaluation set and each variant only runs the layers above.
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
import torch
from torch import nn

from codeunlearn.core.progress import progress
from codeunlearn.core.serialization import nan_for_none
from codeunlearn.data.batching import Batch, token_nll
from codeunlearn.model.surgery import CodebookModel, bypassed, forward_from_site, forward_to_site
from codeunlearn.unlearning.calibration import Point, frontier_markdown
from codeunlearn.unlearning.masks import Mask, apply_mask

log = logging.getLogger(__name__)

# The held-out forget examples with none of the topic's words (codeunlearn.data.topic_words), scored as a
# split of their own: a drop here is not the mask merely suppressing those words.
KEYWORD_FREE = "forget_keyword_free"


@dataclass
class EvalSet:
    """Batches of one evaluation split and a group label per example (e.g. its topic).

    `score_from` (per example, indexed like `groups`) is the first token position whose NLL counts;
    the tokens before it are a prompt the model is conditioned on. None scores every token.
    `subsets` names sets of example indices scored as splits of their own (e.g. the keyword-free
    forget examples), from the same forward passes: a subset costs no model time.
    """

    name: str
    batches: list[Batch]
    groups: list[str]
    score_from: np.ndarray | None = None
    subsets: dict[str, np.ndarray] = field(default_factory=dict)


def normalized_drop(base_nll: float, codebook_nll: float, edited_nll: float) -> float:
    """How far an edit moves NLL from the codebook model back to the base model.

    0 means the codebook model's NLL, 1 the base model's; above 1 is past the base model. NaN when the
    codebook model did not improve on the base (nothing to drop from).
    """
    gain = base_nll - codebook_nll
    if not math.isfinite(gain) or abs(gain) < 1e-6:
        return float("nan")
    return (edited_nll - codebook_nll) / gain


def perplexity(mean_nll: float) -> float:
    """exp of the mean per-token NLL (nats): the size of a uniform choice with the same uncertainty."""
    return math.exp(mean_nll)


def group_means(nll_sums: np.ndarray, token_counts: np.ndarray, groups: Sequence[str]) -> dict[str, float]:
    """Token-weighted mean NLL per group label."""
    totals: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
    for total, count, group in zip(nll_sums, token_counts, groups, strict=True):
        totals[group][0] += float(total)
        totals[group][1] += float(count)
    return {group: s / c for group, (s, c) in totals.items() if c > 0}


def _per_example(eval_set: EvalSet, logits_of: callable) -> tuple[np.ndarray, np.ndarray]:
    """Summed NLL and the number of scored tokens of every example, in input order."""
    n_rows = sum(len(b.rows) for b in eval_set.batches)
    sums, counts = np.zeros(n_rows), np.zeros(n_rows)
    for index, batch in enumerate(eval_set.batches):
        nll = token_nll(logits_of(index, batch).float(), batch)
        scored = batch.attention_mask[:, 1:].to(nll.device)
        if eval_set.score_from is not None:
            start = torch.as_tensor(eval_set.score_from[batch.rows.numpy()], device=nll.device)
            position = torch.arange(1, nll.shape[1] + 1, device=nll.device)  # of each predicted token
            scored = scored * (position[None, :] >= start[:, None])
        sums[batch.rows.numpy()] = (nll * scored).sum(1).cpu().numpy()
        counts[batch.rows.numpy()] = scored.sum(1).cpu().numpy()
    return sums, counts


class Evaluator:
    """Scores variants of one codebook model on fixed evaluation sets."""

    def __init__(self, codebook_model: CodebookModel, eval_sets: list[EvalSet]) -> None:
        self.codebook_model = codebook_model
        self.eval_sets = eval_sets
        self._hidden: dict[str, list[torch.Tensor]] | None = None

    @property
    def hidden(self) -> dict[str, list[torch.Tensor]]:
        """The residual stream at the bottleneck site per set and batch, computed on first use."""
        if self._hidden is None:
            cm, device = self.codebook_model, self.codebook_model.device
            with torch.no_grad(), bypassed(cm):
                self._hidden = {
                    s.name: [
                        forward_to_site(cm, b.input_ids.to(device), b.attention_mask.to(device))[0]
                        for b in progress(s.batches, desc=f"eval cache {s.name}")
                    ]
                    for s in self.eval_sets
                }
        return self._hidden

    def score_codebook(self, mask: Mask | None) -> dict[str, float]:
        """Mean NLL per split and per `split:group` with `mask` in force (None: no mask)."""
        return self._means(self.examples_codebook(mask))

    def score_model(self, model: nn.Module) -> dict[str, float]:
        """Mean NLL of a plain causal LM (e.g. the base model) on the same sets, full forward."""
        return self._means(self.examples_model(model))

    @torch.no_grad()
    def examples_codebook(self, mask: Mask | None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Per set, each example's summed NLL and scored-token count with `mask` in force."""
        cm = self.codebook_model
        apply_mask(cm, mask)
        try:
            return self._per_set(
                lambda name, i, b: forward_from_site(
                    cm, self._bottleneck_output(name, i, b), b.attention_mask.to(cm.device)
                )
            )
        finally:
            apply_mask(cm, None)

    def _bottleneck_output(self, name: str, index: int, batch: Batch) -> torch.Tensor:
        """The bottleneck's output on a cached batch; a set with prompts (`score_from`) is scored as
        prompted text, which bottleneck.mask_condition=prompt masks by its prompt detectors."""
        bottleneck, hidden = self.codebook_model.bottleneck, self.hidden[name][index]
        score_from = next(s.score_from for s in self.eval_sets if s.name == name)
        if score_from is None:
            return bottleneck(hidden).hidden
        with bottleneck.prompted(torch.as_tensor(score_from[batch.rows.numpy()])):
            return bottleneck(hidden).hidden

    @torch.no_grad()
    def examples_model(self, model: nn.Module) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Per set, each example's summed NLL and scored-token count under a plain causal LM."""
        device = next(model.parameters()).device
        with bypassed(self.codebook_model):  # harmless for a foreign model; needed when it is cm.model
            return self._per_set(
                lambda name, i, b: (
                    model(input_ids=b.input_ids.to(device), attention_mask=b.attention_mask.to(device)).logits
                )
            )

    def _per_set(self, logits_of: callable) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        return {s.name: _per_example(s, lambda i, b, n=s.name: logits_of(n, i, b)) for s in self.eval_sets}

    def _means(self, per_set: dict[str, tuple[np.ndarray, np.ndarray]]) -> dict[str, float]:
        scores: dict[str, float] = {}
        for eval_set in self.eval_sets:
            sums, counts = per_set[eval_set.name]
            scores[eval_set.name] = float(sums.sum() / max(counts.sum(), 1))
            if len(set(eval_set.groups)) > 1:
                for group, value in group_means(sums, counts, eval_set.groups).items():
                    scores[f"{eval_set.name}:{group}"] = value
            for subset, rows in eval_set.subsets.items():
                if len(rows):
                    scores[subset] = float(sums[rows].sum() / max(counts[rows].sum(), 1))
        return scores


@dataclass
class EvalReport:
    """NLL per variant and key (split or split:topic), with drops relative to base and codebook."""

    nll: dict[str, dict[str, float]] = field(default_factory=dict)  # variant -> key -> NLL
    sweep: list[dict[str, float]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # lines shown under the main table
    # the topic's S' calibration (selected.json's "calibration"; `test` added where the evaluated mask
    # holds the selected codes); empty when the topic was not calibrated
    calibration: dict = field(default_factory=dict)

    def drop(self, variant: str, key: str) -> float:
        return normalized_drop(self.nll["base"][key], self.nll["codebook"][key], self.nll[variant][key])

    def delta(self, variant: str, key: str) -> float:
        """NLL change of a variant over the codebook model, nats per token."""
        return self.nll[variant][key] - self.nll["codebook"][key]

    def to_markdown(self, keys: Sequence[str] = ("forget", "retain")) -> str:
        """One row per variant: NLL and perplexity per split, then the normalised drop per split."""
        header = [f"{k} NLL" for k in keys] + [f"{k} ppl" for k in keys] + [f"{k} drop" for k in keys]
        lines = ["| model | " + " | ".join(header) + " |", "|---" * (1 + len(header)) + "|"]
        comparable = "codebook" in self.nll and "base" in self.nll
        for variant, scores in self.nll.items():
            nll = [scores.get(k, float("nan")) for k in keys]
            drops = [self._drop_or_nan(variant, k) if comparable else float("nan") for k in keys]
            cells = (
                [f"{v:.4f}" for v in nll]
                + [f"{perplexity(v):.1f}" for v in nll]
                + [f"{d:.3f}" for d in drops]
            )
            lines.append(f"| {variant} | " + " | ".join(cells) + " |")
        return "\n".join(lines)

    def _drop_or_nan(self, variant: str, key: str) -> float:
        # A key some variant lacks (a cached reference scored before the key existed) has no drop.
        if not all(key in self.nll[v] for v in ("base", "codebook", variant)):
            return float("nan")
        return self.drop(variant, key)

    def main_keys(self) -> tuple[str, ...]:
        """The splits of the main table: forget and retain, and the keyword-free forget split when
        it was scored (it is empty for a keyword or regex topic)."""
        is_scored = KEYWORD_FREE in self.nll.get("codebook", {})
        return ("forget", "retain", KEYWORD_FREE) if is_scored else ("forget", "retain")

    def sweep_markdown(self) -> str:
        if not self.sweep:
            return ""
        lines = [
            "| S' | mined forget drop | mined retain Δnll | random forget drop | random retain Δnll |",
            "|---|---|---|---|---|",
        ]
        for row in self.sweep:
            lines.append(
                f"| {int(row['n_select'])} | {row['mined_forget_drop']:.3f} | "
                f"{row['mined_retain_delta']:+.4f} | {row['random_forget_drop']:.3f} | "
                f"{row['random_retain_delta']:+.4f} |"
            )
        return "\n".join(lines)

    def topic_markdown(self, variant: str) -> str:
        keys = sorted(k for k in self.nll["codebook"] if k.startswith("retain:"))
        lines = ["| topic | base | codebook | " + variant + " | Δ vs codebook |", "|---|---|---|---|---|"]
        for key in keys:
            lines.append(
                f"| {key.removeprefix('retain:')} | {self.nll['base'][key]:.3f} | "
                f"{self.nll['codebook'][key]:.3f} | {self.nll[variant][key]:.3f} | "
                f"{self.delta(variant, key):+.4f} |"
            )
        return "\n".join(lines)

    def quality_markdown(self) -> str:
        """Does the bottleneck keep the model usable? Codebook vs base (and vs the fine-tuned reference)
        on every held-out split: the forget split and each retained topic."""
        keys = ["forget"] + sorted(k for k in self.nll["codebook"] if k.startswith("retain:"))
        has_reference = "reference" in self.nll
        header = "| split | base | codebook | codebook - base |" + (
            " reference | codebook / reference |" if has_reference else ""
        )
        lines = [header, "|---" * (4 + 2 * has_reference) + "|"]
        for key in keys:
            base, codebook = self.nll["base"][key], self.nll["codebook"][key]
            row = f"| {key} | {base:.3f} | {codebook:.3f} | {codebook - base:+.3f} |"
            if has_reference:
                reference = self.nll["reference"][key]
                row += f" {reference:.3f} | {codebook / reference:.3f} |"
            lines.append(row)
        worse = [k for k in keys if self.nll["codebook"][k] > self.nll["base"][k]]
        summary = f"codebook worse than base on {len(worse)} of {len(keys)} held-out splits"
        if has_reference:
            ratio = max(self.nll["codebook"][k] / self.nll["reference"][k] for k in keys)
            summary += f"; worst codebook / reference NLL ratio {ratio:.3f}"
        return "\n".join(lines) + "\n\n" + summary

    def render(self) -> str:
        """The whole report as Markdown: main table, mask summary, per-topic damage, quality, sweep."""
        main = {k: v for k, v in self.nll.items() if "@" not in k}
        parts = [
            "## Held-out NLL (nats/token) and normalised drop (0 = codebook, 1 = base)",
            EvalReport(nll=main).to_markdown(self.main_keys()),
            *(f"\n{note}" for note in self.notes),
        ]
        if "masked" in self.nll:
            forget_rise, random_rise = self.delta("masked", "forget"), self.delta("random", "forget")
            share = random_rise / forget_rise if forget_rise else float("nan")
            parts.append(
                f"\nmasked: forget NLL {forget_rise:+.4f}, retain NLL {self.delta('masked', 'retain'):+.4f} "
                f"over the codebook model; random codes of the same count: forget {random_rise:+.4f} "
                f"({share:.2f} of the mined codes' rise)"
            )
            if KEYWORD_FREE in self.main_keys():
                parts.append(
                    f"\nkeyword-free forget: masked drop {self.drop('masked', KEYWORD_FREE):.3f} "
                    f"(forget {self.drop('masked', 'forget'):.3f}), random codes "
                    f"{self.drop('random', KEYWORD_FREE):.3f}"
                )
            parts += ["\n## Per retained topic", self.topic_markdown("masked")]
        parts += ["\n## Does the bottleneck keep the model usable?", self.quality_markdown()]
        if self.calibration:
            parts += ["\n## S' calibrated on the validation split", self.calibration_markdown()]
        if self.sweep:
            parts += ["\n## Sweep over S'", self.sweep_markdown()]
        return "\n".join(parts) + "\n"

    def calibration_markdown(self) -> str:
        """The chosen S' (or why none passed and which was selected) and every S' scored, with the
        held-out test drops beside the selected one's validation drops."""
        entry = self.calibration
        frontier = [Point.from_row(row) for row in entry.get("frontier", [])]
        chosen, best = entry.get("chosen_n_select"), entry.get("best_n_select")
        scored = f"{len(frontier)} size{'s' if len(frontier) != 1 else ''} scored"
        if chosen is not None:
            said, mark = f"S' = {chosen} chosen ({scored}).", "chosen"
        else:
            selected = f"; S' = {best}, the nearest miss, was selected" if best is not None else ""
            said, mark = (
                f"No S' clears both gates ({scored}): {entry.get('reason', '')}{selected}.",
                "selected",
            )
        test = entry.get("test")
        figures = tuple(nan_for_none([test["forget_drop"], test["retain_drop"]])) if test else None
        return said + ("\n\n" + frontier_markdown(frontier, best, mark, figures) if frontier else "")


def evaluation_rows(
    evaluation_id: str,
    mask: Mask,
    mask_version: str,
    codebook_version: str,
    nll: Mapping[str, Mapping[str, float]],
    passed: bool,
) -> pa.Table:
    """The code store's `evaluations` rows: one per split of `nll` (variant -> split -> NLL), which
    holds the base, codebook and masked variants."""
    splits = list(nll["masked"])
    n = len(splits)
    return pa.table(
        {
            "evaluation_id": [evaluation_id] * n,
            "mask_digest": [mask.digest] * n,
            "mask_version": [mask_version] * n,
            "codebook_version": [codebook_version] * n,
            "request_ids": [",".join(s.name for s in mask.sources)] * n,
            "split": splits,
            "base_nll": [nll["base"][s] for s in splits],
            "codebook_nll": [nll["codebook"][s] for s in splits],
            "masked_nll": [nll["masked"][s] for s in splits],
            "normalized_drop": [
                normalized_drop(nll["base"][s], nll["codebook"][s], nll["masked"][s]) for s in splits
            ],
            "gates_passed": [passed] * n,
            "created_at": [datetime.now(UTC)] * n,
        }
    )
