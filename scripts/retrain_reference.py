"""Exact unlearning as the yardstick: how far a model retrained without a topic falls on the scale the
gates read (normalised drop: 0 = codebook model, 1 = base model), beside the sweep's mask.

A reference is a codebook model trained as the run's (same config, same number of training texts,
same seed) with some labels' texts left out (`train.exclude_labels`):

    codeunlearn train -c configs/gcide.yaml run_dir=runs/gcide-lto-law \\
        tracking.state_dir=runs/gcide-lto-law/state 'train.exclude_labels=[Law]'
    python scripts/retrain_reference.py -c configs/gcide.yaml --reference runs/gcide-lto-law

Its forget drop says how much of the codebook model's gain on the topic is the topic's own: a mask
that must reach 0.8 where the retrained model reaches less must forget more than the model would know
had it never seen the topic. A reference trained without a group of unrelated labels scores each of
them at once. It trained on other texts in their place, which moves every text's NLL: its retain drop
(over retain rows of the labels it did see) measures that shift, and the net forget drop takes it
out. Net of it, a group's drop leans, if anywhere, towards more forgetting than a model retrained
without the topic alone, having lost what the other left-out labels taught too (within 0.03 on the
three GCIDE fields measured both ways, docs/results/sweep.md).

Scores each topic's held-out test split, as `codeunlearn sweep` does, the codebook model once for
every reference's topics. `--out DIR` writes `retrain-reference.parquet` and `.md` and skips the
(topic, reference) rows it already holds. `--sweep` names a sweep's Parquet table: its mask is shown
beside each topic, with whether it forgets at least as much as the retrained model (net) within the
retain gate, on validation and on test; a comparison, not a gate.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from codeunlearn.core.config import RunConfig, load_config
from codeunlearn.data.topics import Splits
from codeunlearn.evaluation.calibrated import held_out_pool, test_of, texts_of
from codeunlearn.evaluation.evaluator import normalized_drop
from codeunlearn.evaluation.text_pool import TextPool
from codeunlearn.model import assets
from codeunlearn.model.loading import load_model
from codeunlearn.pipeline.sweep import Sweep
from codeunlearn.training.stamp import STAMP_FILE

TABLE = "retrain-reference"
COLUMNS = (
    "topic", "reference", "left_out", "gain_nats", "forget_drop", "forget_nats", "retain_drop",
    "retain_nats", "forget_texts", "retain_texts",
)  # fmt: skip


def left_out_labels(reference: Path) -> list[str]:
    stamp = reference / "model" / STAMP_FILE
    if not stamp.is_file():
        raise SystemExit(f"{reference}: no trained model ({stamp} missing); train it first (see --help)")
    labels = json.loads(stamp.read_text())["train"].get("exclude_labels", [])
    if not labels:
        raise SystemExit(f"{reference}: trained without train.exclude_labels; it left no topic out")
    return list(labels)


def scored_pool(config: RunConfig, splits: dict[str, Splits], desc: str) -> TextPool:
    model = load_model(config)
    base, _ = assets.load_pretrained(config.model.name, model.device.type)
    pool = held_out_pool(model, base, config.data.max_length, config.eval.batch_size, config.train.mode)
    texts: dict[str, str] = {}
    for topic_splits in splits.values():
        texts.update(texts_of(topic_splits, sides=("test",)))
    pool.add(list(texts), list(texts.values()), desc=desc)
    return pool


def reference_rows(
    config: RunConfig, reference: Path, splits: dict[str, Splits], codebook: TextPool
) -> list[dict]:
    left_out = left_out_labels(reference)
    pool = scored_pool(replace(config, run_dir=str(reference)), splits, f"scoring with {reference.name}")
    rows = []
    for topic, topic_splits in splits.items():
        test = test_of(topic_splits)
        seen = [
            i
            for i, label in zip(
                test.retain, topic_splits.retain_test.column("label").to_pylist(), strict=True
            )
            if label not in left_out
        ]
        nll = {
            side: (codebook.base(ids).mean(), codebook.codebook(ids).mean(), pool.codebook(ids).mean())
            for side, ids in (("forget", test.forget), ("retain", seen))
        }
        rows.append(
            {
                "topic": topic,
                "reference": reference.name,
                "left_out": ",".join(left_out),
                "gain_nats": nll["forget"][0] - nll["forget"][1],
                "forget_drop": normalized_drop(*nll["forget"]),
                "forget_nats": nll["forget"][2] - nll["forget"][1],
                "retain_drop": normalized_drop(*nll["retain"]),
                "retain_nats": nll["retain"][2] - nll["retain"][1],
                "forget_texts": len(test.forget),
                "retain_texts": len(seen),
            }
        )
    return rows


def net_drop(row: dict) -> float:
    """The forget drop net of the reference's shift on the labels it saw: training on other texts in
    the left-out texts' place moves every text's NLL, the topic's too."""
    return (row["forget_nats"] - row["retain_nats"]) / row["gain_nats"]


def matches(row: dict, mask: dict, max_retain: float) -> tuple[bool, bool]:
    """Whether the sweep's mask forgets at least as much as exact unlearning on the topic within the
    retain gate: on validation (any point of its calibration frontier) and on the held-out test split
    (the size it was tested at, for a rejected topic its nearest miss)."""
    net = net_drop(row)
    frontier = json.loads(mask["frontier"] or "[]")
    on_val = any(p["forget_drop"] >= net and p["retain_drop"] <= max_retain for p in frontier)
    tested = mask.get("forget_drop") is not None
    on_test = tested and mask["forget_drop"] >= net and mask["retain_drop"] <= max_retain
    return on_val, on_test


def rank_correlation(a: list[float], b: list[float]) -> float:
    """Spearman's rho (average ranks for ties)."""
    return float(pd.Series(a).rank().corr(pd.Series(b).rank()))


def markdown(rows: list[dict], sweep: dict[str, dict], bar: float, max_retain: float) -> str:
    head = (
        "| topic | gain (nats) | retrained: forget drop (Δnats) | retain drop (Δnats) | net forget drop | "
        "reference | forget / retain texts |"
    )
    rule = "|---|---|---|---|---|---|---|"
    if sweep:
        head += " mask: status, forget / retain | mask matches retrained: val / test |"
        rule += "---|---|"
    lines = [head, rule]
    for row in sorted(rows, key=lambda r: (r["topic"], len(r["left_out"]))):
        line = (
            f"| {row['topic']} | {row['gain_nats']:.3f} | {row['forget_drop']:.3f} "
            f"({row['forget_nats']:+.3f}) | {row['retain_drop']:.3f} ({row['retain_nats']:+.3f}) | "
            f"{net_drop(row):.3f} | {row['reference']} | {row['forget_texts']} / {row['retain_texts']} |"
        )
        if sweep:
            mask = sweep.get(row["topic"])
            if mask and mask.get("forget_drop") is not None:
                on_val, on_test = matches(row, mask, max_retain)
                line += (
                    f" {mask['status']}, {mask['forget_drop']:.3f} / {mask['retain_drop']:.3f} |"
                    f" {'yes' if on_val else 'no'} / {'yes' if on_test else 'no'} |"
                )
            else:
                line += " - | - |"
        lines.append(line)
    lines.append("")
    for reference, left_out in sorted({(r["reference"], r["left_out"]) for r in rows}):
        lines.append(f"- {reference} was trained without {left_out.replace(',', ', ')}")
    raw = sum(row["forget_drop"] >= bar for row in rows)
    net = sum(net_drop(row) >= bar for row in rows)
    lines.append(
        f"\nThe retrained model reaches a forget drop of {bar} in {raw} of {len(rows)} rows "
        f"({net} net of its retain shift)."
    )
    paired = [(row, sweep[row["topic"]]) for row in rows if row["topic"] in sweep]
    if paired:
        reachable = [(row, mask) for row, mask in paired if net_drop(row) >= bar]
        on_val, on_test = (sum(matches(r, m, max_retain)[i] for r, m in paired) for i in (0, 1))
        lines.append(
            f"Beside the sweep ({len(paired)} rows): the mask passes both gates on "
            f"{sum(m['status'] == 'passed' for _, m in paired)}, and on "
            f"{sum(m['status'] == 'passed' for _, m in reachable)} of the {len(reachable)} where the "
            f"retrained model reaches {bar} net; it forgets at least as much as the retrained model "
            f"(net) within a retain drop of {max_retain} on {on_val} on validation and {on_test} on test."
        )
        tested = [(r, m) for r, m in paired if m.get("forget_drop") is not None]
        if len(tested) > 2:
            drops = rank_correlation([net_drop(r) for r, _ in tested], [m["forget_drop"] for _, m in tested])
            nats = rank_correlation(
                [r["forget_nats"] - r["retain_nats"] for r, _ in tested],
                [m["forget_nats"] for _, m in tested],
            )
            lines.append(
                "Spearman rank correlation over the rows, retrained model against the mask (test): "
                f"{drops:.2f} of the forget drops, {nats:.2f} of the forget nats (net of the retain shift)."
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-c", "--config", required=True)
    parser.add_argument(
        "--reference",
        action="append",
        required=True,
        type=Path,
        help="run dir of a model trained without some labels (train.exclude_labels); repeat for several",
    )
    parser.add_argument("--topics", "--topic", default="", help="comma list (default: every left-out label)")
    parser.add_argument("--out", type=Path, help=f"directory for {TABLE}.parquet / .md (resumes from them)")
    parser.add_argument(
        "--sweep", type=Path, help="a sweep's Parquet table, to show its mask beside each topic"
    )
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    started = time.perf_counter()
    config = load_config(args.config, args.overrides)
    wanted = {t for t in args.topics.split(",") if t}
    saved = args.out / f"{TABLE}.parquet" if args.out else None
    rows = pq.read_table(saved).to_pylist() if saved and saved.is_file() else []
    done = {(row["topic"], row["reference"]) for row in rows}
    plan = {}
    for reference in args.reference:
        topics = [
            t
            for t in left_out_labels(reference)
            if (not wanted or t in wanted) and (t, reference.name) not in done
        ]
        if topics:
            plan[reference] = topics
    unknown = wanted - {t for reference in args.reference for t in left_out_labels(reference)}
    if unknown:
        raise SystemExit(f"--topics {sorted(unknown)}: no --reference was trained without them")
    sweep = Sweep(config)
    splits = {reference: {t: sweep.splits(t) for t in topics} for reference, topics in plan.items()}
    if plan:
        every = {t: s for per_reference in splits.values() for t, s in per_reference.items()}
        codebook = scored_pool(config, every, "scoring with the codebook model")
        for reference in plan:
            rows += reference_rows(config, reference, splits[reference], codebook)
            if saved:
                saved.parent.mkdir(parents=True, exist_ok=True)
                pq.write_table(pa.Table.from_pylist([{c: r[c] for c in COLUMNS} for r in rows]), saved)
    mask = {}
    if args.sweep:
        mask = {r["topic"]: r for r in pq.read_table(args.sweep).to_pylist()}
    text = markdown(rows, mask, config.gates.min_forget_drop, config.gates.max_retain_drop)
    if args.out:
        (args.out / f"{TABLE}.md").write_text(text)
    print(text)
    print(f"{time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
