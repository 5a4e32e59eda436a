"""Exact unlearning as the yardstick: how far a model retrained without a topic falls on the scale the
gates read (normalised drop: 0 = codebook model, 1 = base model), beside the sweep's mask.

The reference is a codebook model trained as the run's (same config, same number of training texts,
same seed) with the topic's texts left out (`train.exclude_labels`):

    codeunlearn train -c configs/gcide.yaml run_dir=runs/gcide-lto-law \\
        tracking.state_dir=runs/gcide-lto-law/state 'train.exclude_labels=[Law]'
    python scripts/retrain_reference.py -c configs/gcide.yaml --topic Law --reference runs/gcide-lto-law

Its forget drop says how much of the codebook model's gain on the topic is the topic's own: a mask
that must reach 0.8 where the retrained model reaches less must forget more than the model would know
had it never seen the topic. Its retain drop is training noise plus what the topic taught the rest.
Scores the topic's held-out test split, as `codeunlearn sweep` does; prints one Markdown table row.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

from codeunlearn.core.config import load_config
from codeunlearn.evaluation.calibrated import held_out_pool, score_held_out, test_of, texts_of
from codeunlearn.evaluation.evaluator import normalized_drop
from codeunlearn.model import assets
from codeunlearn.model.loading import load_model
from codeunlearn.pipeline.sweep import Sweep


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-c", "--config", required=True)
    parser.add_argument("--topic", required=True, help="a label the reference was trained without")
    parser.add_argument("--reference", required=True, help="run directory of the model trained without it")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    started = time.perf_counter()
    config = load_config(args.config, args.overrides)
    reference_config = replace(config, run_dir=args.reference)
    splits = Sweep(config).splits(args.topic)
    test = test_of(splits)
    texts = texts_of(splits, sides=("test",))
    nll = {}
    for name, run in (("codebook", config), ("reference", reference_config)):
        codebook_model = load_model(run)
        base, _ = assets.load_pretrained(config.model.name, codebook_model.device.type)
        pool = held_out_pool(
            codebook_model, base, config.data.max_length, config.eval.batch_size, config.train.mode
        )
        pool.add(list(texts), list(texts.values()), desc=f"scoring {args.topic} test texts ({name})")
        scored = score_held_out(pool, test, None)
        nll[name] = scored["codebook"]
        nll["base"] = scored["base"]

    def drop(split: str) -> float:
        return normalized_drop(nll["base"][split], nll["codebook"][split], nll["reference"][split])

    gain = nll["base"]["forget"] - nll["codebook"]["forget"]
    print(
        "| topic | gain (nats) | retrained: forget drop | forget Δnats | retain drop | retain Δnats | "
        "forget / retain texts | s |"
    )
    print("|---|---|---|---|---|---|---|---|")
    print(
        f"| {args.topic} | {gain:.3f} | {drop('forget'):.3f} | "
        f"{nll['reference']['forget'] - nll['codebook']['forget']:+.3f} | {drop('retain'):.3f} | "
        f"{nll['reference']['retain'] - nll['codebook']['retain']:+.3f} | {len(test.forget)} / "
        f"{len(test.retain)} | {time.perf_counter() - started:.0f} |"
    )


if __name__ == "__main__":
    main()
