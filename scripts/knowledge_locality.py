"""Where the forgotten topic's lemma-to-gloss knowledge sits on the multiple-choice probe, and how
well the topic can be told apart at the bottleneck.

Usage: python3 scripts/knowledge_locality.py [CONFIG] [--per-topic 100] [--size 320]
                                            [--sections 0,1,2] [overrides...]
(default configs/pursuit.yaml; needs `codeunlearn run` on that config first; the zero policy with
the config's gates).

The questions are scripts/probe_sweep.py's (the forgotten topic and five neighbours); a question's
prompt is "<lemma>:", its options are glosses. Each row below changes only which code slots the
zero policy empties; the codes chosen are the unmasked model's, as under the zero policy.

0. The mask under the configured gates (as `codeunlearn probe` scores it), and for each topic the
   questions it loses, by the topic of the gloss chosen instead (own topic, forgotten topic, other).
1. Oracles on the forgotten topic's questions alone (the neighbours are untouched by construction):
   - `prompt zeroed`: every code slot at the prompt's tokens emptied, so the layers above the
     bottleneck cannot read the lemma there: is the knowledge read from the lemma's positions?
   - `mask on prompt`: only the mask's codes (the top --size mined codes) emptied there.
   - `mask on answer`: the mask's codes emptied at every gloss token (a gate of 1 on the answer).
2. Detectors of the topic at the lemma, tested on the probe's held-out lemmas: the share of each
   neighbour's lemmas flagged at the threshold that flags 40/50/60% of the forgotten topic's.
   - `code weights`: each code's log enrichment at lemma positions (forget against control and
     retain training splits), summed over a token's chosen codes, max over the lemma's tokens: the
     kind of evidence a code mask has;
   - `residual probe`: a logistic regression on the bottleneck's input averaged over the lemma's
     tokens (the lemma alone after BOS), fitted on every training lemma of the topic against
     20,000 of other topics (the corpus's training split, not the probe's held-out synsets).
3. (with 2) Prompt-conditioned masking: the questions whose lemma the residual probe flags get `prompt
   zeroed` and `mask on answer`; nothing else is masked. The thresholds flag 45, 40 and 35% of the
   topic's training lemmas in 5-fold cross-validation; the unconditional (":") prompts are scored
   by the same probe.

Prints the tables and writes <run_dir>/eval/knowledge_locality-<sections>.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
from probe_sweep import probe_evaluator, ranked_on_glosses

from codeunlearn.core.config import load_config
from codeunlearn.core.paths import open_run
from codeunlearn.data.tables import batch_texts, read_table
from codeunlearn.data.topics import read_splits
from codeunlearn.evaluation.evaluator import _per_example
from codeunlearn.evaluation.probes import accuracy_by_topic, answers
from codeunlearn.model.bottleneck import NO_CODE
from codeunlearn.model.loading import load_model
from codeunlearn.model.surgery import forward_from_site
from codeunlearn.unlearning.masks import apply_mask, mask_from_codes
from codeunlearn.unlearning.mining import count_codes
from codeunlearn.unlearning.topic_detector import TopicDetector, fit_at_recall, prompt_features

RECALLS = (0.4, 0.5, 0.6)
TRAINING_RECALLS = (0.45, 0.4, 0.35, 0.3)  # the prompt-conditioned rows: thresholds set on training lemmas
NEGATIVES = 20_000  # training lemmas of other topics the residual probe is fitted against

# (ids, masked, prompt_at, on_topic) -> emptied slots, all (B, T', k) but the last (B,):
# `prompt_at` (B, T') marks the prompt's tokens ("<lemma>:"), `on_topic` the rows the rule acts on
DropRule = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def prompt_zeroed(ids, masked, prompt_at, on_topic):
    return (ids != NO_CODE) & (on_topic[:, None] & prompt_at).unsqueeze(-1)


def mask_on_prompt(ids, masked, prompt_at, on_topic):
    return masked & (on_topic[:, None] & prompt_at).unsqueeze(-1)


def mask_on_answer(ids, masked, prompt_at, on_topic):
    return masked & (on_topic[:, None] & ~prompt_at).unsqueeze(-1)


def zeroed_and_masked(ids, masked, prompt_at, on_topic):
    return prompt_zeroed(ids, masked, prompt_at, on_topic) | mask_on_answer(ids, masked, prompt_at, on_topic)


class ProbeLab:
    """The probe's sequences with the bottleneck's input and code choices computed once, scored under
    any drop rule in one pass over the layers above."""

    def __init__(self, config, model, per_topic: int) -> None:
        self.config, self.model = config, model
        self.questions, self.evaluator = probe_evaluator(config, model, per_topic)
        self.eval_set = self.evaluator.eval_sets[0]
        self.n_conditional = 4 * len(self.questions)
        bottleneck = model.bottleneck
        hidden = self.evaluator.hidden[self.eval_set.name]
        self.ids = [bottleneck.select(h[:, 1:].reshape(-1, h.shape[-1])).view(h.shape[0], h.shape[1] - 1, -1)
                    for h in hidden]  # fmt: skip
        self.accuracy: dict[str, dict[str, float]] = {}
        self.chosen: dict[str, np.ndarray] = {}  # name -> each question's chosen option

    def question_of(self, row: int) -> int | None:
        """The question a sequence asks with its lemma (None: an unconditional ':' sequence)."""
        return row // len(self.questions[0].options) if row < self.n_conditional else None

    @torch.no_grad()
    def score(self, name: str, codes: list[int], rule: DropRule | None, on_topic_row: np.ndarray) -> None:
        """Accuracy per topic with `codes` masked and `rule` deciding the emptied slots of the rows
        flagged in `on_topic_row` (None: the configured gates, as `codeunlearn probe` scores)."""
        model, bottleneck = self.model, self.model.bottleneck
        current: dict[str, torch.Tensor] = {}

        def logits_of(index, batch):
            rows = batch.rows.numpy()
            body = torch.arange(self.ids[index].shape[1])[None, :]  # body position j is token j + 1
            current["ids"] = self.ids[index]
            current["prompt_at"] = body < torch.as_tensor(self.eval_set.score_from[rows] - 1)[:, None]
            current["on_topic"] = torch.as_tensor(on_topic_row[rows])
            out = bottleneck(self.evaluator.hidden[self.eval_set.name][index]).hidden
            return forward_from_site(model, out, batch.attention_mask)

        def dropped(ids, gated_before=None):
            masked = bottleneck.mask[ids.clamp_min(0)] & (ids != NO_CODE)
            return rule(ids, masked, current["prompt_at"], current["on_topic"]), None

        apply_mask(model, mask_from_codes(bottleneck.n_codes, name, codes) if codes else None)
        try:
            chosen = lambda h: current["ids"].reshape(-1, current["ids"].shape[-1])  # noqa: E731
            rule_in_force = replaced(bottleneck, "_dropped", dropped) if rule else contextlib.nullcontext()
            with replaced(bottleneck, "select", chosen), rule_in_force:
                sums, _ = _per_example(self.eval_set, logits_of)
        finally:
            apply_mask(model, None)
        self.chosen[name] = answers(self.questions, sums)
        self.accuracy[name] = accuracy_by_topic(self.questions, self.chosen[name])
        print(f"{name:40s}", _row(self.accuracy[name], self.accuracy.get("unmasked")), flush=True)

    def rows_where(self, question_flag: np.ndarray, unconditional: bool) -> np.ndarray:
        """A flag per sequence: its question's flag, or `unconditional` for the ':' sequences."""
        questions = [self.question_of(row) for row in range(len(self.eval_set.groups))]
        return np.array([unconditional if q is None else bool(question_flag[q]) for q in questions])


@contextlib.contextmanager
def replaced(obj, attribute: str, value) -> Iterator[None]:
    setattr(obj, attribute, value)
    try:
        yield
    finally:
        delattr(obj, attribute)  # back to the class's method


def lost_to(config, questions, before: np.ndarray, after: np.ndarray) -> dict[str, dict[str, int]]:
    """Per topic, the questions answered before and missed after, by the topic of the gloss chosen
    instead: the question's own topic, the forgotten topic, or another."""
    held_out = read_table(open_run(config).corpus_dir / "test.parquet")
    topic_of = dict(
        zip(held_out.column("gloss").to_pylist(), held_out.column("label").to_pylist(), strict=True)
    )
    lost: dict[str, dict[str, int]] = {}
    for question, was, now in zip(questions, before, after, strict=True):
        if was == question.answer and now != question.answer:
            chosen = str(topic_of[question.options[now]])
            kind = (
                "own topic"
                if chosen == question.topic
                else ("forgotten topic" if chosen == config.topic.label else "other")
            )
            counts = lost.setdefault(question.topic, {})
            counts[kind] = counts.get(kind, 0) + 1
    return dict(sorted(lost.items()))


def _row(accuracy: dict[str, float], before: dict[str, float] | None) -> str:
    cells = []
    for topic, value in accuracy.items():
        change = f" ({100 * (value - before[topic]):+.0f})" if before else ""
        cells.append(f"{topic.split('.')[-1]} {100 * value:.1f}{change}")
    return ", ".join(cells)


def lemma_residuals(model, lemmas: list[str], batch_size: int = 64) -> np.ndarray:
    """The bottleneck's input averaged over each lemma's tokens, the lemma alone after BOS (N, d)."""
    return prompt_features(model, lemmas, max_length=64, batch_size=batch_size)


def training_texts(config) -> dict[str, list[str]]:
    """The texts of the forget, control and retain training splits."""
    splits = read_splits(Path(config.run_dir) / "data" / "topic")
    return {
        name: getattr(splits, f"{name}_train")["text"].to_pylist() for name in ("forget", "control", "retain")
    }


def code_weights(config, model, texts: dict[str, list[str]]) -> torch.Tensor:
    """Each code's log enrichment at lemma positions, forget against control and retain (C,)."""
    counts = {}
    for name, rows in texts.items():
        spans = [[(0, text.index(":"))] if ":" in text else [] for text in rows]
        batches = batch_texts(rows, model.tokenizer, config.data.max_length, config.mining.batch_size, spans)
        counts[name] = count_codes(model, batches, desc=f"lemma codes {name}")
    forget = counts["forget"].token_counts.astype(float)
    other = counts["control"].token_counts.astype(float) + counts["retain"].token_counts.astype(float)
    n_forget = counts["forget"].n_tokens
    n_other = counts["control"].n_tokens + counts["retain"].n_tokens
    return torch.as_tensor(np.log((forget + 0.5) / n_forget) - np.log((other + 0.5) / n_other)).float()


def flagged_share(scores: np.ndarray, topics: list[str], forget_topic: str) -> dict[str, dict[str, float]]:
    """Per recall on the forgotten topic, the share of each other topic's lemmas scoring as high."""
    topics = np.asarray(topics)
    table = {}
    for recall in RECALLS:
        threshold = np.quantile(scores[topics == forget_topic], 1 - recall)
        table[f"{recall:.0%}"] = {
            t: float(np.mean(scores[topics == t] >= threshold))
            for t in sorted(set(topics))
            if t != forget_topic
        }
    return table


def _shares(items) -> str:
    return ", ".join(f"{topic.split('.')[-1]} {100 * share:.0f}%" for topic, share in items)


def print_shares(name: str, table: dict[str, dict[str, float]]) -> None:
    for recall, shares in table.items():
        print(f"{name:16s} recall {recall}: {_shares(shares.items())}", flush=True)


def flagged_by_topic(config, model, probe, thresholds: dict[str, float]) -> dict[str, dict[str, float]]:
    """Per threshold, the share of every topic's held-out lemmas (all test synsets) the probe flags:
    what bounds each topic's loss under prompt-conditioned masking, beyond the probed neighbours."""
    held_out = read_table(open_run(config).corpus_dir / "test.parquet")
    scores = probe.score(
        lemma_residuals(model, [names[0] for names in held_out.column("lemmas").to_pylist()], 256)
    )
    labels = np.array([str(label) for label in held_out.column("label").to_pylist()])
    return {
        recall: {t: float(np.mean(scores[labels == t] >= threshold)) for t in sorted(set(labels))}
        for recall, threshold in thresholds.items()
    }


def fit_residual_probe(config, model) -> tuple[TopicDetector, np.ndarray, np.ndarray]:
    """The residual probe fitted on every training lemma of the forgotten topic against NEGATIVES
    others, with its 5-fold held-out scores on those lemmas (for thresholds) and their labels."""
    train = read_table(open_run(config).corpus_dir / "train.parquet")
    lemmas = [names[0] for names in train.column("lemmas").to_pylist()]
    on_topic = np.array([str(label) == config.topic.label for label in train.column("label").to_pylist()])
    others = np.flatnonzero(~on_topic)
    negatives = np.random.default_rng(config.seed).choice(others, min(NEGATIVES, len(others)), replace=False)
    rows = np.concatenate([np.flatnonzero(on_topic), negatives])
    features, labels = lemma_residuals(model, [lemmas[r] for r in rows], 256), on_topic[rows]
    detector, held_out = fit_at_recall(features, labels, recall=TRAINING_RECALLS[0], seed=config.seed)
    return detector, held_out, labels


def configured_mask(lab: ProbeLab, codes: list[int], size: int) -> None:
    """Section 0: the mask under the configured gates, and where its lost questions went."""
    name = f"configured gates ({size} codes)"
    lab.score(name, codes, None, np.zeros(len(lab.eval_set.groups), dtype=bool))
    lost = lost_to(lab.config, lab.questions, lab.chosen["unmasked"], lab.chosen[name])
    for topic, counts in lost.items():
        print(f"  {topic}: questions lost, by the topic of the gloss chosen instead: {counts}", flush=True)


def oracles(lab: ProbeLab, codes: list[int], size: int, on_forget: np.ndarray) -> None:
    """Section 1: the three rules on the forgotten topic's questions alone."""
    lab.score("prompt zeroed", codes, prompt_zeroed, on_forget)
    lab.score(f"mask on prompt ({size} codes)", codes, mask_on_prompt, on_forget)
    lab.score(f"mask on answer ({size} codes)", codes, mask_on_answer, on_forget)


def detectors(lab: ProbeLab) -> dict:
    """Section 2: how well code weights and the residual probe flag the topic's lemmas; then the
    residual probe's prompt-conditioned masking at its training-recall thresholds."""
    config, model, questions = lab.config, lab.model, lab.questions
    forget_topic, topics = config.topic.label, [q.topic for q in lab.questions]
    weights = code_weights(config, model, training_texts(config))
    token_scores = [weights[ids.clamp_min(0)].masked_fill(ids == NO_CODE, 0).sum(-1) for ids in lab.ids]
    code_score = np.zeros(len(questions))
    for index, batch in enumerate(lab.eval_set.batches):
        for row, scores in zip(batch.rows.tolist(), token_scores[index], strict=True):
            if (q := lab.question_of(row)) is not None:
                n_lemma = int(lab.eval_set.score_from[row]) - 2  # tokens before the ':'
                code_score[q] = float(scores[:n_lemma].max())
    shares = {"code weights": flagged_share(code_score, topics, forget_topic)}
    probe, held_out, labels = fit_residual_probe(config, model)
    residual_score = probe.score(lemma_residuals(model, [q.lemma for q in questions]))
    colon_score = float(probe.score(lemma_residuals(model, [":"]))[0])
    shares["residual probe"] = flagged_share(residual_score, topics, forget_topic)
    for name, table in shares.items():
        print_shares(name, table)
    thresholds = {
        f"{recall:.0%}": float(np.quantile(held_out[labels], 1 - recall)) for recall in TRAINING_RECALLS
    }
    cross_validated = {
        recall: {"threshold": t, "other topics flagged": float(np.mean(held_out[~labels] >= t))}
        for recall, t in thresholds.items()
    }
    print("residual probe, 5-fold on the training lemmas, by recall:", cross_validated, flush=True)
    every_topic = flagged_by_topic(config, model, probe, thresholds)
    for recall, shares_at in every_topic.items():
        top = sorted(shares_at.items(), key=lambda item: -item[1])[:8]
        print(f"held-out lemmas flagged at training recall {recall}:", _shares(top), flush=True)
    return {
        "flagged": shares,
        "cross_validated": cross_validated,
        "held_out_flagged": every_topic,
        "flags": {recall: residual_score >= t for recall, t in thresholds.items()},
        "colon_flagged": {recall: colon_score >= t for recall, t in thresholds.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("config", nargs="?", default="configs/pursuit.yaml")
    parser.add_argument("--per-topic", type=int, default=100, help="questions per neighbouring topic")
    parser.add_argument("--size", type=int, default=320, help="the mask: this many top mined codes")
    parser.add_argument("--sections", default="0,1,2", help="sections to run (2 includes 3)")
    args, overrides = parser.parse_known_args()
    sections = {int(s) for s in args.sections.split(",")}
    config = load_config(args.config, [*overrides, "bottleneck.mask_policy=zero"])
    lab = ProbeLab(config, load_model(config), args.per_topic)
    codes = ranked_on_glosses(config, Path(config.run_dir))[0][: args.size]
    on_forget = lab.rows_where(np.array([q.topic == config.topic.label for q in lab.questions]), False)
    lab.score("unmasked", [], None, np.zeros_like(on_forget))
    result: dict = {}
    if 0 in sections:
        print("0. the configured mask", flush=True)
        configured_mask(lab, codes, args.size)
    if 1 in sections:
        print("1. oracles on the forgotten topic's questions", flush=True)
        oracles(lab, codes, args.size, on_forget)
    if 2 in sections or 3 in sections:
        print("2. detectors at the lemma (share of each neighbour's lemmas flagged)", flush=True)
        result = detectors(lab)
        print("3. prompt-conditioned masking with the residual probe", flush=True)
        for recall, flags in result.pop("flags").items():
            flagged = lab.rows_where(flags, result["colon_flagged"][recall])
            name = f"flagged at training recall {recall}: zeroed + mask on answer"
            lab.score(name, codes, zeroed_and_masked, flagged)
        result.pop("colon_flagged")
    out = Path(config.run_dir) / "eval" / f"knowledge_locality-{'-'.join(map(str, sorted(sections)))}.json"
    out.write_text(json.dumps({"accuracy": lab.accuracy, **result}, indent=1))
    print("wrote", out)


if __name__ == "__main__":
    main()
