"""Multiple-choice accuracy on the forgotten topic and five neighbours as the mask grows.

Usage: python3 scripts/probe_sweep.py [CONFIG]  (default configs/default.yaml; needs `codeunlearn run`).
S' up to the eligible count takes the ranked eligible codes; beyond it, the codes most enriched on the
forget set by raw ratio. Prints one line per S' and writes <run_dir>/eval/probe_sweep.json.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from codeunlearn.config import load_config
from codeunlearn.evaluation import Evaluator
from codeunlearn.knowledge import KnowledgeProbe
from codeunlearn.masks import mask_from_codes
from codeunlearn.pipeline import load_model
from codeunlearn.probes import ProbeConfig, accuracy_by_topic, answers, question_set
from codeunlearn.selection import enrichment
from codeunlearn.store import CodeStore

TOPICS = {"noun.plant", "noun.substance", "noun.animal", "noun.artifact", "noun.person"}
SIZES = (0, 192, 314, 1024, 2048)


def main(config_path: str) -> None:
    config = load_config(config_path)
    run_dir = Path(config.run_dir)
    model = load_model(config)
    probe = ProbeConfig(questions_per_topic=50, forget_questions=200)
    knowledge = KnowledgeProbe(config, probe, model)
    questions = [q for q in knowledge.questions if q.topic in TOPICS | {config.topic.label}]
    evaluator = Evaluator(model, [question_set(questions, model.tokenizer, probe)])
    selection = json.loads((run_dir / "mining" / "selected.json").read_text())
    store = CodeStore(run_dir / "store")
    forget, control = (
        store.read_counts(selection["counts_run"], s, config.topic.key) for s in ("forget", "control")
    )
    by_ratio = enrichment(forget, control).argsort()[::-1].tolist()
    n_codes = model.bottleneck.n_codes
    rows = {}
    for size in SIZES:
        ranked = selection["ranked_eligible"]
        codes = ranked[:size] if size <= len(ranked) else by_ratio[:size]
        mask = mask_from_codes(n_codes, "sweep", codes) if size else None
        sums, _ = evaluator.examples_codebook(mask)["probe"]
        rows[size] = accuracy_by_topic(questions, answers(questions, sums))
        print(size, {topic: round(100 * value, 1) for topic, value in rows[size].items()}, flush=True)
    (run_dir / "eval" / "probe_sweep.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "configs/default.yaml")
