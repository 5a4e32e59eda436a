"""`codeunlearn sweep`: every label topic of a corpus answered as its own calibrated request.

One trained codebook, loaded once. Code firings are counted once per text and codebook into the code
store (`text_codes`), so a topic's forget and control counts are one DuckDB query; each validation and
test text is run through the lower layers once (`TextPool`). A topic's own cost is then its calibration
and its test scoring. Each topic's result is written as it finishes, keyed by the codebook and the
settings, so a stopped sweep resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import pyarrow as pa

from codeunlearn.core.config import RunConfig, with_removed_defaults
from codeunlearn.core.errors import CodeunlearnError
from codeunlearn.core.paths import RunPaths, open_run
from codeunlearn.data.labelled_texts import label_counts
from codeunlearn.data.tables import batch_texts, corpus_sides, write_json
from codeunlearn.data.topics import Splits, build_splits
from codeunlearn.evaluation.calibrated import (
    calibrate_topic,
    held_out_pool,
    score_held_out,
    test_of,
    texts_of,
    top_mask,
    validation_of,
)
from codeunlearn.evaluation.evaluator import KEYWORD_FREE, normalized_drop
from codeunlearn.evaluation.outcome import TopicOutcome, random_control
from codeunlearn.evaluation.text_pool import TextPool
from codeunlearn.model import assets
from codeunlearn.model.loading import load_model
from codeunlearn.model.surgery import CodebookModel, weights_hash
from codeunlearn.pipeline.sweep_detectors import TextFeatures
from codeunlearn.pipeline.training_texts import validation_seen_texts
from codeunlearn.store.code_store import CodeStore
from codeunlearn.store.text_codes import add_firings, codebook_key, counted_texts, summed_counts
from codeunlearn.unlearning.mining import text_firings
from codeunlearn.unlearning.recipe import rank_eligible
from codeunlearn.unlearning.topic_detector import TopicDetector

log = logging.getLogger(__name__)

COUNT_CHUNK = 2048  # texts counted per stored file: a stopped count keeps every finished chunk
RESULT_FORMAT = 2  # raised when what a topic's row means changes, so older rows are not read back


@dataclass(frozen=True)
class SweepPaths:
    """Where one sweep (one codebook, one set of settings) keeps its per-topic results."""

    root: Path
    key: str

    @property
    def topics_dir(self) -> Path:
        return self.root / "topics"

    def topic_file(self, topic: str) -> Path:
        return self.topics_dir / f"{topic}.json"


def sweep_topics(train: pa.Table, test: pa.Table, min_examples: int, only: tuple[str, ...] = ()) -> list[str]:
    """Labels with at least `min_examples` rows over both sides (or `only`, checked), sorted."""
    counts = label_counts(train, test)
    if only:
        unknown = [t for t in only if t not in counts]
        if unknown:
            raise CodeunlearnError(
                f"sweep.topics names labels the corpus does not have: {unknown}; labels are e.g. "
                f"{sorted(counts)[:5]}"
            )
        return sorted(only)
    return sorted(label for label, n in counts.items() if n >= min_examples)


def corpus_name(corpus: str) -> str:
    """A corpus's name for file and run names: `wordnet` as is, a file or directory by its stem."""
    path = Path(corpus)
    return path.stem if path.suffix or len(path.parts) > 1 else corpus


# Settings added after sweeps were first keyed, at the value that was the only behaviour before them:
# left out of the key at that value, so that a sweep made before the setting existed resumes.
_ADDED_SINCE_SWEEPS = {"calibration": {"forget_margin": 0.0}, "bottleneck": {"mask_detect_after": 4}}


def _without_added_defaults(section: str, values: dict) -> dict:
    added = _ADDED_SINCE_SWEEPS.get(section, {})
    return {k: v for k, v in values.items() if not (k in added and v == added[k])}


def settings_key(config: RunConfig, codebook: str) -> str:
    """A digest of everything a topic's result depends on besides the topic."""
    topic = {k: v for k, v in asdict(config.topic).items() if k.startswith("max_") or k.startswith("keyword")}
    payload = {
        "format": RESULT_FORMAT,
        "codebook": codebook,
        "seed": config.seed,
        "topic": topic,
        "control": config.topic.control,
        **({"val_rows": config.topic.val_rows} if config.topic.val_rows != "any" else {}),
        # removed settings at their old defaults, so that a sweep made while they existed resumes
        "mining": with_removed_defaults("mining", asdict(config.mining)),
        "calibration": _without_added_defaults("calibration", asdict(config.calibration)),
        "gates": asdict(config.gates),
        "random_seed": config.eval.random_seed,
        "serving": _without_added_defaults(
            "bottleneck", with_removed_defaults("bottleneck", asdict(config.bottleneck))
        ),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:12]


class Sweep:
    """One codebook's sweep over a corpus's label topics."""

    def __init__(self, config: RunConfig) -> None:
        if config.mining.positions != "all":
            raise CodeunlearnError(
                "codeunlearn sweep counts every content token of each text once (mining.positions=all); "
                f"this config has mining.positions={config.mining.positions}"
            )
        self.config = config
        self.paths: RunPaths = open_run(config)
        self.train, self.test = corpus_sides(self.paths)
        self._seen_texts = validation_seen_texts(config, self.train)
        self.store = CodeStore(self.paths.store_dir)
        self._model: CodebookModel | None = None
        self._pool: TextPool | None = None
        self._text_features: TextFeatures | None = None

    @property
    def codebook_model(self) -> CodebookModel:
        if self._model is None:
            self._model = load_model(self.config)
        return self._model

    @property
    def codebook(self) -> str:
        return codebook_key(weights_hash(self.paths.model_dir), self.config.data.max_length)

    @property
    def text_features_path(self) -> Path:
        """The cached mean inputs of training texts: they depend on the codebook alone, so every sweep
        of it (whatever its settings) shares them."""
        return self.paths.root / "sweep" / f"text-features-{self.codebook}.npz"

    def where(self) -> SweepPaths:
        key = settings_key(self.config, self.codebook)
        return SweepPaths(self.paths.root / "sweep" / f"{self.corpus}-{key}", key)

    @property
    def corpus(self) -> str:
        return corpus_name(self.config.data.corpus)

    def topics(self) -> list[str]:
        return sweep_topics(self.train, self.test, self.config.sweep.min_examples, self.config.sweep.topics)

    def splits(self, topic: str) -> Splits:
        topic_config = replace(self.config.topic, label=topic, keywords=(), regex=None, examples_file=None)
        return build_splits(
            self.train, self.test, topic_config, self.config.seed, trained_texts=self._seen_texts
        )

    # ------------------------------------------------------------ shared work, once

    def count_texts(self, splits: list[Splits]) -> int:
        """Count the firings of every forget and control training text not counted yet; returns how many."""
        wanted: dict[str, str] = {}
        for s in splits:
            for table in (s.forget_train, s.control_train):
                ids = map(str, table.column("id").to_pylist())
                wanted.update(zip(ids, table.column("text").to_pylist(), strict=True))
        missing = sorted(set(wanted) - counted_texts(self.store, self.codebook))
        log.info("code firings: %d of %d training texts still to count", len(missing), len(wanted))
        cm = self.codebook_model
        for start in range(0, len(missing), COUNT_CHUNK):
            ids = missing[start : start + COUNT_CHUNK]
            batches = batch_texts(
                [wanted[i] for i in ids],
                cm.tokenizer,
                self.config.data.max_length,
                self.config.mining.batch_size,
            )
            firings = text_firings(cm, batches, desc=f"counting codes {start + len(ids)}/{len(missing)}")
            add_firings(self.store, self.codebook, ids, firings)
        return len(missing)

    def pool(self) -> TextPool:
        if self._pool is None:
            cm = self.codebook_model
            base, _ = assets.load_pretrained(self.config.model.name, cm.device.type)
            self._pool = held_out_pool(
                cm, base, self.config.data.max_length, self.config.eval.batch_size, self.config.train.mode
            )
        return self._pool

    def detector(self, topic: str, splits: Splits) -> TopicDetector | None:
        """The topic's text detector under bottleneck.mask_condition=text, else None."""
        if self.config.bottleneck.mask_condition != "text":
            return None
        if self._text_features is None:
            self._text_features = TextFeatures(
                self.codebook_model, self.train, self.config, self.text_features_path
            )
        return self._text_features.detector(topic, splits)

    # ------------------------------------------------------------ one topic

    def ranked_codes(self, splits: Splits) -> list[int]:
        """The topic's eligible codes, best first, from the counted firings of its mining sets."""
        n_codes = self.codebook_model.bottleneck.n_codes
        forget, control = (
            summed_counts(
                self.store, self.codebook, [str(i) for i in table.column("id").to_pylist()], n_codes
            )
            for table in (splits.forget_train, splits.control_train)
        )
        return rank_eligible(forget, control, self.config.mining)

    def answer(self, topic: str, splits: Splits) -> dict:
        """Mine, calibrate on validation, score the chosen size on test: the topic's result row."""
        started = time.perf_counter()
        config, cm, pool = self.config, self.codebook_model, self.pool()
        n_codes = cm.bottleneck.n_codes
        n_mined = splits.forget_train.num_rows
        ranked = self.ranked_codes(splits)
        validation, test = validation_of(splits), test_of(splits)
        pool.add(*zip(*texts_of(splits).items(), strict=True), desc=f"scoring {topic} held-out texts")
        detector = self.detector(topic, splits)
        calibration = calibrate_topic(
            pool,
            validation,
            ranked,
            n_codes,
            config.calibration,
            config.gates,
            n_mined,
            detector=detector,
        )
        row = {
            "topic": topic,
            "n_forget_train": n_mined,
            "n_forget_val": len(validation.forget),
            "n_forget_test": len(test.forget),
            "n_keyword_free_test": len(test.keyword_free),
            "n_eligible": len(ranked),
            **calibration.summary(),
        }
        if detector is not None:
            row["detector_recall"] = detector.recall
        size = calibration.best.n_select if calibration.best else 0
        if size:  # a rejected topic's test figures are those of its nearest miss
            mask = top_mask(ranked, size, n_codes, topic, rule=config.mining.rule, detector=detector)
            nll = score_held_out(pool, test, mask, random_control(mask, size, config.eval.random_seed))
            outcome = TopicOutcome.from_nll(nll)
            row |= test_figures(nll, outcome, config)
            row["test_n_select"] = size
            failures = outcome.failures(config.gates)
        else:
            failures = []
        row["val_test_agree"] = None if "forget_drop" not in row else calibration.passed == (not failures)
        if not calibration.passed:
            failures.insert(0, f"calibration: {calibration.reason}")
        row["status"] = _status(row, calibration.passed, failures)
        row["reasons"] = "; ".join(failures)
        row["seconds"] = round(time.perf_counter() - started, 2)
        return row

    def run(self, on_topic: Callable[[dict], None] | None = None) -> list[dict]:
        """Every topic's row, answering the topics without a result for this codebook and settings."""
        where = self.where()
        topics = self.topics()
        done = {t for t in topics if where.topic_file(t).exists()}
        pending = [t for t in topics if t not in done]
        log.info(
            "sweep %s: %d topics, %d already done, %d to answer",
            where.root,
            len(topics),
            len(done),
            len(pending),
        )
        if pending:
            splits = {t: self.splits(t) for t in pending}
            started = time.perf_counter()
            self.count_texts(list(splits.values()))
            log.info("counting took %.0f s", time.perf_counter() - started)
            seconds: list[float] = []
            for index, topic in enumerate(pending, 1):
                row = self.answer(topic, splits[topic])
                write_json(where.topic_file(topic), row)
                seconds.append(row["seconds"])
                log.info(
                    "[%d/%d] %s: %s, S'=%s, forget drop %s, retain drop %s (%.0f s)%s",
                    index,
                    len(pending),
                    topic,
                    row["status"],
                    row.get("chosen_n_select"),
                    _fmt(row.get("forget_drop")),
                    _fmt(row.get("retain_drop")),
                    row["seconds"],
                    _time_left(seconds, len(pending) - index),
                )
                if on_topic is not None:
                    on_topic(row)
        return [json.loads(where.topic_file(t).read_text()) for t in topics]


def test_figures(nll: dict[str, dict[str, float]], outcome: TopicOutcome, config: RunConfig) -> dict:
    """The held-out figures of one mask: normalised drops beside raw nats, the gain and learned flag,
    the random-mask control, and the keyword-free forget drop."""

    def drop(variant: str, split: str) -> float:
        return normalized_drop(nll["base"][split], nll["codebook"][split], nll[variant][split])

    figures = outcome.metrics(config.gates, nll=False)
    figures["learned"] = outcome.learned(config.gates.min_gain)
    figures["random_forget_drop"] = drop("random", "forget")
    figures["random_retain_drop"] = drop("random", "retain")
    figures["keyword_free_drop"] = drop("masked", KEYWORD_FREE) if KEYWORD_FREE in nll["masked"] else math.nan
    return figures


def _status(row: dict, calibrated: bool, failures: list[str]) -> str:
    if row.get("learned") is False:
        return "not_learned"
    if not calibrated:
        return "rejected"
    return "failed" if failures else "passed"


def _time_left(seconds: list[float], remaining: int) -> str:
    """About how long the remaining topics take, at the median pace so far (resumes restart it)."""
    if not remaining:
        return ""
    return f"; about {statistics.median(seconds) * remaining / 60:.0f} min left"


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"
