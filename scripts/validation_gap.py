"""Why a topic's validation forget drop and its test drop disagree: the mask of a given size scored on
the validation forget rows the codebook trained on, those it did not, and the test rows, each with its
own gain over the base model (the drop's denominator) and the mask's raw rise in nats.

    python scripts/validation_gap.py -c configs/default.yaml noun.quantity:72 noun.time:96

Each argument is TOPIC:SIZE (the S' to score, e.g. the sweep's chosen size). Uses the run's trained
codebook and code store (`codeunlearn sweep` counts them); prints a Markdown table.
"""

from __future__ import annotations

import argparse

from codeunlearn.core.config import load_config
from codeunlearn.evaluation.calibrated import table_texts, top_mask
from codeunlearn.evaluation.evaluator import normalized_drop
from codeunlearn.pipeline.sweep import Sweep
from codeunlearn.pipeline.training_texts import training_texts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-c", "--config", required=True)
    parser.add_argument("specs", nargs="+", metavar="TOPIC:SIZE")
    args = parser.parse_args()
    config = load_config(args.config, [])
    trained_on = set(training_texts(config))
    sweep = Sweep(config)
    pool, n_codes = sweep.pool(), sweep.codebook_model.bottleneck.n_codes
    print("| topic | S' | rows | n | gain (nats) | mask Δnats | forget drop |\n|---|---|---|---|---|---|---|")
    for spec in args.specs:
        topic, _, size = spec.partition(":")
        if not size.isdigit():
            raise SystemExit(f"{spec!r}: give TOPIC:SIZE, e.g. noun.time:96")
        splits = sweep.splits(topic)
        mask = top_mask(sweep.ranked_codes(splits), int(size), n_codes, topic)
        val, test = table_texts(splits.forget_val), table_texts(splits.forget_test)
        pool.add(list({**val, **test}), list({**val, **test}.values()), desc=f"scoring {topic}")
        groups = {
            "validation, all": val,
            "validation, trained on": {i: t for i, t in val.items() if t in trained_on},
            "validation, not trained on": {i: t for i, t in val.items() if t not in trained_on},
            "test": test,
        }
        for name, rows in groups.items():
            ids = list(rows)
            if not ids:
                continue
            base, codebook = pool.base(ids).mean(), pool.codebook(ids).mean()
            masked = pool.masked(ids, mask).mean()
            drop = normalized_drop(base, codebook, masked)
            print(
                f"| {topic} | {size} | {name} | {len(ids)} | {base - codebook:.3f} | "
                f"{masked - codebook:+.3f} | {drop:.3f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
