"""A sweep's table (Parquet and Markdown), plot and one-object summary."""

from __future__ import annotations

import json
import math
import statistics
import subprocess
from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from codeunlearn.core.file_lock import write_durably

COLUMNS = (
    ("topic", "topic"),
    ("status", "status"),
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


def summary(rows: Sequence[dict], corpus: str, codebook: str, setting: dict | None = None) -> dict:
    """The sweep's one object: how many topics pass, medians, the worst retain drop, cost per topic."""
    scored = [r for r in rows if "forget_drop" in r]
    return {
        "corpus": corpus,
        "topics": len(rows),
        "passed": sum(r["status"] == "passed" for r in rows),
        "not_learned": sum(r["status"] == "not_learned" for r in rows),
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
