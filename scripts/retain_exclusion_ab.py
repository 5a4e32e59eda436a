"""A/B: a request's calibration beside the active mask, its validation and test retain sets drawn with
and without the rows of the topics the active mask already forgets (codeunlearn/data/forgotten.py).

Nothing is registered, recorded or activated: the topic is mined once and calibrated twice in memory
against the run directory's active mask, then each chosen S' is scored on its test split. Prints one
table row per variant.

    python scripts/retain_exclusion_ab.py -c configs/default.yaml --label noun.food
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

from codeunlearn.core.config import load_config
from codeunlearn.core.paths import run_paths
from codeunlearn.data.tables import read_table
from codeunlearn.data.topics import build_splits
from codeunlearn.evaluation.calibrated import (
    calibrate_topic,
    held_out_pool,
    score_held_out,
    sized,
    test_of,
    texts_of,
    validation_of,
)
from codeunlearn.evaluation.outcome import TopicOutcome
from codeunlearn.model import assets
from codeunlearn.model.loading import load_model
from codeunlearn.requests.forgotten import forgotten_topics
from codeunlearn.requests.queue import RequestStore
from codeunlearn.unlearning.active_mask import read_active
from codeunlearn.unlearning.recipe import detector_data, mine_mask, topic_batches, with_source


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-c", "--config", type=Path, required=True)
    parser.add_argument("--label", required=True)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    config = load_config(args.config, args.overrides)
    topic = replace(config.topic, label=args.label, keywords=(), regex=None, examples_file=None)
    config = replace(config, topic=topic)
    paths = run_paths(config)
    active = read_active(paths)
    if active is None or not active.sources:
        raise SystemExit(f"{paths.active_mask} holds no mask: nothing is forgotten yet, nothing to compare")
    names = [source.name for source in active.sources]
    forgotten = forgotten_topics(RequestStore(paths.store_dir), names, config.topic, own="")
    train, test = (
        read_table(paths.corpus_dir / "train.parquet"),
        read_table(paths.corpus_dir / "test.parquet"),
    )
    variants = {
        "with the forgotten topics' rows": build_splits(train, test, topic, config.seed),
        "without them (new default)": build_splits(train, test, topic, config.seed, forgotten),
    }
    codebook_model = load_model(config)
    base, _ = assets.load_pretrained(config.model.name, codebook_model.device.type)
    first = next(iter(variants.values()))  # forget and control sets are the same in both
    mined = mine_mask(
        codebook_model,
        topic.key,
        topic_batches(config.mining, config.topic, config.data.max_length, first, codebook_model.tokenizer),
        config.mining,
        detector_data(config),
    )
    pool = held_out_pool(
        codebook_model, base, config.data.max_length, config.eval.batch_size, config.train.mode
    )
    for splits in variants.values():
        texts = texts_of(splits)
        pool.add(list(texts), list(texts.values()))
    print(f"active mask: {', '.join(names)} ({len(active.code_ids)} codes); topic {topic.key}")
    print("| retain sets | val retain rows | S' | val forget | val retain | test forget | test retain | s |")
    print("|---|---|---|---|---|---|---|---|")
    for name, splits in variants.items():
        start = time.perf_counter()
        validation = validation_of(splits)
        calibration = calibrate_topic(
            pool,
            validation,
            mined.ranked,
            mined.mask.n_codes,
            config.calibration,
            config.gates,
            splits.forget_train.num_rows,
            active,
        )
        point = calibration.best  # the chosen S', or the nearest miss
        verdict = "" if calibration.passed else " (rejected)"
        mask = with_source(active, sized(mined, point.n_select))
        outcome = TopicOutcome.from_nll(score_held_out(pool, test_of(splits), mask))
        print(
            f"| {name} | {len(validation.retain)} | {point.n_select}{verdict} "
            f"| {point.forget_drop:.3f} | {point.retain_drop:.3f} | {outcome.forget_drop:.3f} "
            f"| {outcome.retain_drop:.3f} | {time.perf_counter() - start:.0f} |"
        )


if __name__ == "__main__":
    main()
