"""A sweep's table (Parquet and Markdown), plot and one-object summary."""

from __future__ import annotations

import json
import math
import statistics
import subprocess
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from codeunlearn.core.file_lock import write_durably

COLUMNS = (
    ("topic", "topic"),
    ("status", "status"),
    ("limit", "limit"),
    ("chosen_n_select", "S'"),
    ("forget_drop", "forget drop"),
    ("retain_drop", "retain drop"),
    ("keyword_free_drop", "keyword-free drop"),
    ("random_forget_drop", "random drop"),
    ("random_share", "random share"),
    ("random_nats", "random Δnats"),
    ("forget_nats", "forget Δnats"),
    ("retain_nats", "retain Δnats"),
    ("gain", "gain nats"),
    ("val_test_agree", "val=test"),
    ("n_forget_train", "n mine"),
    ("seconds", "s"),
)


LIMITS = {
    "not learned": "the codebook model's gain over the base model is under gates.min_gain",
    "no codes": "no code passes mining's thresholds on the topic",
    "out of codes": "every eligible code masked on validation, the forget gate unmet, the retain gate open",
    "retain gate": "the retain gate stops the mask before the forget gate on validation",
    "forget gate": "the largest size tried forgets too little on validation, the retain gate open",
    "test forget": "passed validation; the test split's forget drop is under the gate",
    "test retain": "passed validation; the test split's retain drop is over the gate",
    "random control": "passed validation; a random mask of as many codes does too much of the rise",
}


def limit(row: dict, gates: dict) -> str:
    """What stopped a topic, one of LIMITS ('' for a passing one; several joined by '+'), from its row
    and the gates it was swept under."""
    if row["status"] == "passed":
        return ""
    if row["status"] == "not_learned":
        return "not learned"
    if row["status"] == "failed":
        return "+".join(_test_limits(row, gates)) or "test"
    if not row.get("n_eligible"):
        return "no codes"
    if any(point["retain_drop"] > gates["max_retain_drop"] for point in row.get("frontier") or []):
        return "retain gate"
    return "out of codes" if row.get("best_n_select") == row["n_eligible"] else "forget gate"


def _test_limits(row: dict, gates: dict) -> list[str]:
    checks = (
        ("test forget", row.get("forget_drop"), lambda v: v < gates["min_forget_drop"]),
        ("test retain", row.get("retain_drop"), lambda v: v > gates["max_retain_drop"]),
        ("random control", row.get("random_share"), lambda v: v > gates["max_random_share"]),
    )
    return [name for name, value, fails in checks if _finite(value) and fails(value)]


def with_limits(rows: Sequence[dict], gates: dict) -> list[dict]:
    """The rows, each with its `limit` (LIMITS) set."""
    return [{**row, "limit": limit(row, gates)} for row in rows]


def summary(rows: Sequence[dict], corpus: str, codebook: str, setting: dict | None = None) -> dict:
    """The sweep's one object: how many topics pass, medians, the worst retain drop, cost per topic,
    and (rows with `limit`, see with_limits) how many topics each limit stopped."""
    scored = [r for r in rows if "forget_drop" in r]
    limits = Counter(r["limit"] for r in rows if r.get("limit"))
    return {
        "corpus": corpus,
        "topics": len(rows),
        "passed": sum(r["status"] == "passed" for r in rows),
        "not_learned": sum(r["status"] == "not_learned" for r in rows),
        **({"limits": dict(limits.most_common())} if limits else {}),
        "median_forget_drop": _median(r["forget_drop"] for r in scored),
        "median_retain_drop": _median(r["retain_drop"] for r in scored),
        "max_retain_drop": max((r["retain_drop"] for r in scored if _finite(r["retain_drop"])), default=None),
        "median_seconds_per_topic": _median(r["seconds"] for r in rows),
        "codebook": codebook,
        "commit": _commit(),
        **({"setting": setting} if setting else {}),
    }


def to_markdown(rows: Sequence[dict], totals: dict) -> str:
    lines = [
        f"# Sweep over {totals['corpus']}: {totals['passed']} of {totals['topics']} topics pass both gates",
        "",
        f"median forget drop {_cell(totals['median_forget_drop'])}, median retain drop "
        f"{_cell(totals['median_retain_drop'])}, worst retain drop {_cell(totals['max_retain_drop'])}, "
        f"median {_cell(totals['median_seconds_per_topic'])} s per topic; codebook {totals['codebook']}, "
        f"commit {totals['commit']}",
        "",
        "| " + " | ".join(title for _, title in COLUMNS) + " |",
        "|" + "---|" * len(COLUMNS),
    ]
    for row in rows:
        lines.append("| " + " | ".join(_cell(row.get(key)) for key, _ in COLUMNS) + " |")
    if totals.get("limits"):
        lines += ["", "What stopped the topics that did not pass:", ""]
        lines += [f"- {name} ({count}): {LIMITS.get(name, name)}" for name, count in totals["limits"].items()]
    reasons = [f"- {row['topic']}: {row['reasons']}" for row in rows if row.get("reasons")]
    if reasons:
        lines += ["", "Why topics failed:", "", *reasons]
    return "\n".join(lines) + "\n"


def write(rows: Sequence[dict], totals: dict, directory: Path) -> dict[str, Path]:
    """Write sweep-<corpus>.json/.md/.parquet/.png under `directory`; the paths by kind."""
    directory.mkdir(parents=True, exist_ok=True)
    stem = directory / f"sweep-{totals['corpus']}"
    paths = {kind: stem.with_suffix(f".{kind}") for kind in ("json", "md", "parquet", "png")}
    write_durably(paths["json"], json.dumps(totals, indent=2, default=str) + "\n")
    write_durably(paths["md"], to_markdown(rows, totals))
    flat = [{k: (json.dumps(v) if isinstance(v, (list, dict)) else v) for k, v in r.items()} for r in rows]
    pq.write_table(pa.Table.from_pylist(flat), paths["parquet"])
    _plot(rows, totals, paths["png"])
    return paths


def _plot(rows: Sequence[dict], totals: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scored = [r for r in rows if "forget_drop" in r]
    figure, axis = plt.subplots(figsize=(7, 5))
    for status, color in (("passed", "tab:green"), ("failed", "tab:orange"), ("rejected", "tab:red")):
        points = [r for r in scored if r["status"] == status]
        axis.scatter(
            [r["retain_drop"] for r in points], [r["forget_drop"] for r in points], c=color, label=status
        )
        for r in points:
            axis.annotate(r["topic"].split(".")[-1], (r["retain_drop"], r["forget_drop"]), fontsize=6)
    not_learned = [r for r in scored if r["status"] == "not_learned"]
    if not_learned:
        axis.scatter(
            [r["retain_drop"] for r in not_learned], [r["forget_drop"] for r in not_learned], c="grey"
        )
    gates = totals.get("setting", {}).get("gates", {})
    if gates:
        axis.axhline(gates["min_forget_drop"], color="grey", linestyle="--", linewidth=0.8)
        axis.axvline(gates["max_retain_drop"], color="grey", linestyle="--", linewidth=0.8)
    axis.set_xlabel("normalised retain drop (held-out test)")
    axis.set_ylabel("normalised forget drop (held-out test)")
    axis.set_title(f"{totals['corpus']}: {totals['passed']} of {totals['topics']} topics pass")
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def _median(values) -> float | None:
    finite = [float(v) for v in values if v is not None and _finite(v)]
    return statistics.median(finite) if finite else None


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def _cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.3f}" if math.isfinite(value) else "nan"
    return str(value)


def _commit() -> str:
    try:
        result = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return result.stdout.strip() or "unknown"
