"""Multiple-choice accuracy on the forgotten topic and five neighbours as the mask grows.

Usage: python3 scripts/probe_sweep.py [CONFIG] [--policy next_best|zero] [--mine-on all|lemma]
                                      [--sizes 0,192,...] [--per-topic 50] [overrides...]
(default configs/default.yaml; needs `codeunlearn run` on that config first).

--mine-on all ranks the run's mined codes (all gloss tokens, as `codeunlearn mine` does); S' past the
eligible count takes the codes most enriched on the forget set by raw ratio. --mine-on lemma counts
codes only at the lemma of each record (the text before its first ':'), forget set against control
set, and ranks by that enrichment: the codes that carry *which* food a record is about. --policy
switches what a masked code's slot gets (the model is not retrained). Prints one line per S' (with
each topic's paired exact-test p-value against the first size, normally 0: is the change more than
the probe's noise?) and writes both to
<run_dir>/eval/probe_sweep-<policy>[-gate<G>][-then<G_lo>]-<mine_on>.json (G: the configured
bottleneck.mask_gate of the zero policy, when past 1; G_lo: its mask_context_gate, when set).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from codeunlearn.core.config import ProbeConfig, load_config
from codeunlearn.data.tables import batch_texts
from codeunlearn.data.topics import read_splits
from codeunlearn.evaluation.evaluator import Evaluator
from codeunlearn.evaluation.knowledge import KnowledgeProbe
from codeunlearn.evaluation.probes import (
    accuracy_by_topic,
    answers,
    correct_answers,
    paired_p_values,
    question_set,
)
from codeunlearn.model.loading import load_model
from codeunlearn.store.code_store import CodeStore
from codeunlearn.unlearning.masks import mask_from_codes
from codeunlearn.unlearning.mining import count_codes
from codeunlearn.unlearning.selection import enrichment

TOPICS = {"noun.plant", "noun.substance", "noun.animal", "noun.artifact", "noun.person"}


def probe_evaluator(config, model, per_topic: int = 50) -> tuple[list, Evaluator]:
    """The questions on the forgotten topic (200) and TOPICS (`per_topic` each), ready to score on `model`."""
    probe = ProbeConfig(questions_per_topic=per_topic, forget_questions=200)
    knowledge = KnowledgeProbe(config, probe, model)
    questions = [q for q in knowledge.questions if q.topic in TOPICS | {config.topic.label}]
    return questions, Evaluator(model, [question_set(questions, model.tokenizer, probe)])


def probe_answers(questions: list, evaluator: Evaluator, mask=None) -> np.ndarray:
    """Each question's chosen option under `mask` (None: no mask)."""
    sums, _ = evaluator.examples_codebook(mask)["probe"]
    return answers(questions, sums)


def probe_accuracy(questions: list, evaluator: Evaluator, mask=None) -> dict[str, float]:
    """Accuracy per topic of the evaluator's model under `mask` (None: no mask)."""
    return accuracy_by_topic(questions, probe_answers(questions, evaluator, mask))


def ranked_on_glosses(config, run_dir: Path) -> tuple[list[int], list[int]]:
    selection = json.loads((run_dir / "mining" / "selected.json").read_text())
    store = CodeStore(run_dir / "store")
    forget, control = (
        store.read_counts(selection["counts_run"], s, config.topic.key) for s in ("forget", "control")
    )
    return selection["ranked_eligible"], enrichment(forget, control).argsort()[::-1].tolist()


def ranked_on_lemmas(config, run_dir: Path, model) -> tuple[list[int], list[int]]:
    splits = read_splits(run_dir / "data" / "topic")
    counts = {}
    for name in ("forget", "control"):
        texts = getattr(splits, f"{name}_train")["text"].to_pylist()
        spans = [[(0, text.index(":"))] if ":" in text else [] for text in texts]
        batches = batch_texts(texts, model.tokenizer, config.data.max_length, config.mining.batch_size, spans)
        counts[name] = count_codes(model, batches, desc=f"lemma codes {name}")
    ratio = enrichment(counts["forget"], counts["control"])
    eligible = np.flatnonzero(
        (counts["forget"].token_counts >= config.mining.min_count) & (ratio >= config.mining.min_enrichment)
    )
    ranked = eligible[np.argsort(-ratio[eligible], kind="stable")].tolist()
    print(
        f"lemma positions: forget {counts['forget'].n_tokens}, control {counts['control'].n_tokens}; "
        f"{len(ranked)} codes eligible",
        flush=True,
    )
    return ranked, ratio.argsort()[::-1].tolist()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("config", nargs="?", default="configs/default.yaml")
    parser.add_argument("--policy", default="next_best", choices=("next_best", "zero"))
    parser.add_argument("--mine-on", default="all", choices=("all", "lemma"))
    parser.add_argument("--sizes", default="0,192,314,1024,2048")
    parser.add_argument(
        "--per-topic", type=int, default=50, help="questions per neighbouring topic (one is 100/N points)"
    )
    args, overrides = parser.parse_known_args()
    policy = [f"bottleneck.mask_policy={args.policy}"]
    if args.policy == "next_best":  # a gate (configs/pursuit.yaml) gates only the zero policy
        policy += ["bottleneck.mask_gate=1", "bottleneck.mask_context_gate=0"]
    config = load_config(args.config, [*overrides, *policy])
    run_dir = Path(config.run_dir)
    model = load_model(config)
    questions, evaluator = probe_evaluator(config, model, args.per_topic)
    if args.mine_on == "lemma":
        ranked, by_ratio = ranked_on_lemmas(config, run_dir, model)
    else:
        ranked, by_ratio = ranked_on_glosses(config, run_dir)
    n_codes = model.bottleneck.n_codes
    rows, p_values, first = {}, {}, None
    for size in (int(s) for s in args.sizes.split(",")):
        codes = ranked[:size] if size <= len(ranked) else by_ratio[:size]
        mask = mask_from_codes(n_codes, "sweep", codes) if size else None
        chosen = probe_answers(questions, evaluator, mask)
        rows[size] = accuracy_by_topic(questions, chosen)
        correct = correct_answers(questions, chosen)
        first = correct if first is None else first
        p_values[size] = paired_p_values(questions, first, correct)
        print(size, {topic: round(100 * value, 1) for topic, value in rows[size].items()}, flush=True)
        print("  paired p:", {topic: float(f"{p:.2g}") for topic, p in p_values[size].items()}, flush=True)
    gate, context_gate = config.bottleneck.mask_gate, config.bottleneck.mask_context_gate
    suffix = f"-gate{gate}" if gate > 1 else ""
    suffix += f"-then{context_gate}" if context_gate else ""
    out = run_dir / "eval" / f"probe_sweep-{args.policy}{suffix}-{args.mine_on}.json"
    out.write_text(json.dumps({"accuracy": rows, "paired_p_values": p_values}, indent=1))


if __name__ == "__main__":
    main()
