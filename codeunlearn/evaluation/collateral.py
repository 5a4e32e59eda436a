"""Collateral damage: which retained topics a mask hurts, and whether its codes predict it beforehand.

Code usage is counted per retained topic, on a seeded sample of up to EXAMPLES_PER_TOPIC training
records of each label (the forget topic's excluded), into the code store under split `topic_sample`.
One SQL query then gives, per topic, the share of the topic's code firings that the mask disables,
and how many of the mask's codes are among the topic's own most enriched codes (the topic against all
other retained topics). Both need no evaluation: they are known before a mask is applied. The measured
damage (NLL change and normalised drop on the held-out retain split) is joined in when an evaluation
report of the same mask exists, with the rank correlation between prediction and damage.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from codeunlearn.core.config import RunConfig
from codeunlearn.core.errors import CodeunlearnError
from codeunlearn.core.paths import open_run
from codeunlearn.core.serialization import without_nan
from codeunlearn.data.tables import batch_texts, read_table
from codeunlearn.evaluation import plots
from codeunlearn.evaluation.evaluator import normalized_drop
from codeunlearn.model.loading import load_model
from codeunlearn.model.surgery import CodebookModel
from codeunlearn.store.code_store import CodeStore
from codeunlearn.unlearning.active_mask import read_active
from codeunlearn.unlearning.masks import Mask
from codeunlearn.unlearning.mining import count_codes
from codeunlearn.unlearning.selection import CodeCounts

log = logging.getLogger(__name__)

TOPIC_SPLIT = "topic_sample"
EXAMPLES_PER_TOPIC = 100

COLLATERAL_SQL = """
WITH per_topic AS (
    SELECT topic, code_id, token_count, n_tokens, n_examples
    FROM code_rates WHERE run_id = $run_id AND split = $split
),
sizes AS (
    SELECT topic, any_value(n_examples) AS n_examples, sum(token_count) AS firings
    FROM per_topic GROUP BY topic
),
totals AS (SELECT code_id, sum(token_count) AS all_count FROM per_topic GROUP BY code_id),
everything AS (SELECT sum(firings) AS all_firings FROM sizes),
scored AS (
    SELECT p.topic, p.code_id, p.token_count,
           ((p.token_count + 0.5) / (s.firings + 0.5))
           / ((t.all_count - p.token_count + 0.5) / (e.all_firings - s.firings + 0.5)) AS enrichment
    FROM per_topic p JOIN sizes s USING (topic) JOIN totals t USING (code_id), everything e
),
ranked AS (
    SELECT *, row_number() OVER (PARTITION BY topic ORDER BY enrichment DESC, code_id) AS rank
    FROM scored WHERE token_count >= $min_count AND enrichment > 1
),
overlap AS (
    SELECT topic, count(*) FILTER (WHERE rank <= $top_n AND list_contains($mask::INTEGER[], code_id)) AS n
    FROM ranked GROUP BY topic
),
masked AS (
    SELECT topic, sum(token_count) FILTER (WHERE list_contains($mask::INTEGER[], code_id)) AS firings
    FROM per_topic GROUP BY topic
)
SELECT s.topic, s.n_examples::BIGINT AS examples,
       coalesce(m.firings, 0)::DOUBLE / nullif(s.firings, 0) AS masked_share,
       coalesce(o.n, 0)::BIGINT AS enriched_overlap
FROM sizes s LEFT JOIN masked m USING (topic) LEFT JOIN overlap o USING (topic)
ORDER BY s.topic
"""
"""Per topic: examples counted, the share of its firings on masked codes, and how many masked codes are
among its `top_n` most enriched codes (enrichment: smoothed firing share in the topic over the share in
all other topics, codes firing at least `min_count` times)."""


@dataclass
class CollateralRow:
    topic: str
    examples: int
    masked_share: float  # share of the topic's code firings the mask disables
    enriched_overlap: int  # masked codes among the topic's top-N enriched codes
    nll_delta: float = float("nan")  # measured NLL change over the codebook model
    drop: float = float("nan")  # measured normalised drop (0 = codebook, 1 = base)


@dataclass
class CollateralReport:
    forget_topic: str
    mask_codes: int
    top_n: int
    forget_share: float  # the same share on the forget set, for scale
    rows: list[CollateralRow] = field(default_factory=list)

    @property
    def spearman(self) -> float:
        """Rank correlation of masked share and measured NLL change over the retained topics."""
        pairs = [(r.masked_share, r.nll_delta) for r in self.rows if math.isfinite(r.nll_delta)]
        return spearman(*zip(*pairs, strict=True)) if len(pairs) > 2 else float("nan")

    def to_markdown(self) -> str:
        lines = [
            f"Mask of {self.mask_codes} codes for {self.forget_topic}: it disables "
            f"{100 * self.forget_share:.1f}% of the forget set's code firings.",
            "",
            f"| retained topic | examples counted | masked share of firings | masked among top-{self.top_n} "
            "enriched | NLL Δ (measured) | normalised drop (measured) |",
            "|---|---|---|---|---|---|",
        ]
        for r in sorted(self.rows, key=lambda r: -r.masked_share):
            lines.append(
                f"| {r.topic} | {r.examples} | {100 * r.masked_share:.2f}% | {r.enriched_overlap} "
                f"| {r.nll_delta:+.4f} | {r.drop:.3f} |"
            )
        lines += ["", f"Spearman rank correlation, masked share vs measured NLL Δ: {self.spearman:.2f}"]
        return "\n".join(lines) + "\n"

    def to_json(self) -> dict:
        return without_nan(asdict(self) | {"spearman": self.spearman})


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rho (average ranks for ties)."""

    def ranks(values: Sequence[float]) -> np.ndarray:
        values = np.asarray(values, dtype=float)
        order = values.argsort(kind="stable")
        result = np.empty(len(values))
        result[order] = np.arange(len(values))
        for value in np.unique(values):  # ties share their mean rank
            tied = values == value
            result[tied] = result[tied].mean()
        return result

    rx, ry = ranks(x), ranks(y)
    if rx.std() == 0 or ry.std() == 0:
        return float("nan")
    return float(np.corrcoef(rx, ry)[0, 1])


def topic_samples(
    table: pa.Table, exclude: str | None, per_topic: int, seed: int, label_column: str = "label"
) -> dict[str, list[str]]:
    """Up to `per_topic` texts of every label but `exclude`, a seeded sample, labels sorted."""
    if label_column not in table.column_names:
        raise CodeunlearnError(f"the corpus has no `{label_column}` column: it holds no topics to compare")
    texts, labels = table.column("text").to_pylist(), table.column(label_column).to_pylist()
    by_label: dict[str, list[str]] = {}
    for text, label in zip(texts, labels, strict=True):
        if label is not None and str(label) != exclude:
            by_label.setdefault(str(label), []).append(text)
    rng = np.random.default_rng(seed)
    return {
        label: [by_label[label][i] for i in sorted(rng.permutation(len(by_label[label]))[:per_topic])]
        for label in sorted(by_label)
    }


def count_topics(
    codebook_model: CodebookModel, samples: dict[str, list[str]], batches_of
) -> dict[str, CodeCounts]:
    """Code firing counts of each topic's texts; `batches_of(texts)` batches them."""
    return {topic: count_codes(codebook_model, batches_of(texts), topic) for topic, texts in samples.items()}


def predict(store: CodeStore, run_id: str, mask: Mask, top_n: int, min_count: int) -> list[CollateralRow]:
    """Per retained topic, the masked share of firings and the enriched-code overlap, from stored counts."""
    table = store.sql(
        COLLATERAL_SQL,
        {
            "run_id": run_id,
            "split": TOPIC_SPLIT,
            "mask": [int(c) for c in mask.code_ids],
            "top_n": top_n,
            "min_count": min_count,
        },
    )
    if table.num_rows == 0:
        raise CodeunlearnError(f"no per-topic counts for run {run_id}: run `codeunlearn collateral` to count")
    return [CollateralRow(**row) for row in table.to_pylist()]


def join_measured(
    rows: list[CollateralRow], nll: dict[str, dict[str, float]], variant: str = "masked"
) -> None:
    """Fill in the measured NLL change and normalised drop from an evaluation report's `nll`."""
    for row in rows:
        key = f"retain:{row.topic}"
        if variant in nll and key in nll[variant]:
            base, codebook, edited = nll["base"][key], nll["codebook"][key], nll[variant][key]
            row.nll_delta, row.drop = edited - codebook, normalized_drop(base, codebook, edited)


def collateral(config: RunConfig, codebook_model: CodebookModel | None = None) -> CollateralReport:
    """The collateral-damage report of the run's active mask; counts per topic are made once and kept
    in the code store."""
    paths = open_run(config)
    if not paths.active_mask.is_file() or not paths.selection_file.is_file():
        raise CodeunlearnError(f"no mask in {paths.root}: run `codeunlearn run` (or mine and unlearn) first")
    mask = read_active(paths)  # raises when it is over another codebook than the run's
    run_id = json.loads(paths.selection_file.read_text())["counts_run"]
    store = CodeStore(paths.store_dir)
    have = (
        store.sql(
            "SELECT count(*) AS n FROM code_counts WHERE run_id = $run_id AND split = $split",
            {"run_id": run_id, "split": TOPIC_SPLIT},
        )
        .column("n")[0]
        .as_py()
    )
    if not have:
        codebook_model = codebook_model or load_model(config)
        samples = topic_samples(
            read_table(paths.corpus_dir / "train.parquet"),
            config.topic.label,
            EXAMPLES_PER_TOPIC,
            config.seed,
        )
        batch = config.mining.batch_size
        per_topic = count_topics(
            codebook_model,
            samples,
            lambda texts: batch_texts(texts, codebook_model.tokenizer, config.data.max_length, batch),
        )
        for topic, counts in per_topic.items():
            store.write_counts(run_id, TOPIC_SPLIT, topic, counts)
    forget = store.read_counts(run_id, "forget", config.topic.key)
    firings = forget.token_counts.sum()
    report = CollateralReport(
        forget_topic=config.topic.key,
        mask_codes=len(mask.code_ids),
        top_n=len(mask.code_ids),
        forget_share=float(forget.token_counts[list(mask.code_ids)].sum() / max(firings, 1)),
        rows=predict(store, run_id, mask, len(mask.code_ids), config.mining.min_count),
    )
    report_file = paths.eval_dir / "report.json"
    if report_file.is_file():
        evaluated = json.loads(report_file.read_text())
        if evaluated.get("mask_digest") == mask.digest:
            join_measured(report.rows, evaluated["nll"])
        else:
            log.warning("eval/report.json is of another mask: run `codeunlearn evaluate` for measured damage")
    return report


def write(report: CollateralReport, directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "collateral.md").write_text(report.to_markdown())
    (directory / "collateral.json").write_text(json.dumps(report.to_json(), indent=2))
    figure = plots.collateral_scatter(
        {r.topic: (r.masked_share, r.nll_delta) for r in report.rows if math.isfinite(r.nll_delta)}
    )
    try:
        figure.savefig(directory / "collateral.png", dpi=120)
    finally:
        import matplotlib.pyplot as plt

        plt.close(figure)
