"""What limits a mask on each topic: measured from a sweep's rows and the code store, no model run.

For every topic of a sweep it prints
- what stopped it, as the sweep's table says (`codeunlearn.pipeline.sweep_report.limit`): `retain gate`
  (the retain gate binds before the forget drop reaches the gate; `retain-bound` before this name),
  `out of codes` (every eligible code masked, forget short of the gate with retain room left;
  `codes-bound`), `test forget` / `test retain` / `random control` (passed validation, failed that gate
  on the held-out test; `test-miss`), `not learned`, or `passed`;
- how concentrated the topic is in codes of its own, from the code firings the sweep counted once per
  training text (`text_codes`): rank the codes by the topic's firing rate over the rest of the corpus's,
  and report the share of the topic's code firings those codes hold by the point where they hold 1% of
  every other topic's firings (`own@1%`), the share held by codes at least twice as frequent on the
  topic (`own_x2`), and the topic's codebook gain in nats/token;
- rank correlations (Spearman) of those figures with the test forget drop, the raw forget nats and the
  forget nats per retain nat over the topics.

    python scripts/topic_limits.py --run-dir runs/default-fp32 \
        --sweep results/variants/balanced-val/sweep-wordnet.parquet
    python scripts/topic_limits.py --run-dir runs/fortunes --sweep results/sweep-fortunes.parquet
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

from codeunlearn.pipeline.sweep_report import limit

SMOOTH = 1e-7  # keeps a code that never fires outside the topic rankable


def label_code_counts(run_dir: Path, codebook: str) -> pd.DataFrame:
    """Firings per (label, code) over the training texts the code store counted: one DuckDB query."""
    query = f"""
        select l.label, c.code_id, sum(c.token_count) as n
        from read_parquet('{run_dir}/store/text_codes/**/*.parquet', hive_partitioning = true) c
        join read_parquet('{run_dir}/data/corpus/train.parquet') l on l.id = c.text_id
        where c.codebook = ?
        group by all
    """
    table = duckdb.execute(query, [codebook]).df()
    return table.pivot_table(index="code_id", columns="label", values="n", fill_value=0)


def concentration(counts: pd.DataFrame, topic: str) -> dict[str, float]:
    own = counts[topic].to_numpy(float)
    rest = counts.drop(columns=[topic]).sum(axis=1).to_numpy(float)
    own_rate, rest_rate = own / own.sum(), rest / rest.sum()
    ratio = (own_rate + SMOOTH) / (rest_rate + SMOOTH)
    order = np.argsort(-ratio)
    held, leaked = np.cumsum(own_rate[order]), np.cumsum(rest_rate[order])
    at_one_percent = held[min(np.searchsorted(leaked, 0.01), len(held) - 1)]
    return {"own@1%": at_one_percent, "own_x2": own_rate[ratio >= 2].sum()}


def failure_kind(row: pd.Series, gates: dict) -> str:
    frontier = row["frontier"]
    as_dict = {**row.to_dict(), "frontier": json.loads(frontier) if isinstance(frontier, str) else frontier}
    return limit(as_dict, gates) or "passed"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run-dir", type=Path, required=True, help="the run directory the sweep read")
    parser.add_argument("--sweep", type=Path, required=True, help="the sweep's .parquet table")
    args = parser.parse_args()

    rows = pd.read_parquet(args.sweep)
    summary = json.loads(args.sweep.with_suffix(".json").read_text())
    counts = label_code_counts(args.run_dir, summary["codebook"])
    gates = summary["setting"]["gates"]
    table = pd.DataFrame(
        [
            {
                "topic": row["topic"],
                "kind": failure_kind(row, gates),
                "forget drop": row["forget_drop"],
                "retain drop": row["retain_drop"],
                "forget nats": row["forget_nats"],
                "retain nats": row["retain_nats"],
                "gain nats": row["gain"],
                "eligible": row["n_eligible"],
                **concentration(counts, row["topic"]),
            }
            for _, row in rows.iterrows()
        ]
    ).sort_values("own@1%", ascending=False)
    table["forget/retain nats"] = table["forget nats"] / table["retain nats"].clip(lower=1e-3)
    print(table.round(3).to_markdown(index=False))
    print()
    print(table["kind"].value_counts().to_string())
    print()
    targets = ["forget drop", "forget nats", "forget/retain nats"]
    correlations = table[["own@1%", "own_x2", "gain nats", "eligible", *targets]].corr(method="spearman")
    print("Spearman rank correlation over the topics:")
    print(correlations.loc[["own@1%", "own_x2", "gain nats", "eligible"], targets].round(3).to_markdown())


if __name__ == "__main__":
    main()
