"""The paper's experiment, offline: train a translation codebook, mine a word topic's codes, mask them,
and score BLEU / chrF / METEOR / BERTScore on the topic split and the rest across S'.

Layout under `run_dir`: data/topic (splits), model (the codebook model), eval/translation.{json,md}.
Normalised score per metric: 0 = the base model before codebook training, 1 = the codebook model
(the paper's scale); the relative change over the codebook model is reported beside it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

from codeunlearn.core.config import RunConfig, save_config
from codeunlearn.core.paths import RunPaths, open_run
from codeunlearn.core.serialization import without_nan
from codeunlearn.data.corpus import split_train_test
from codeunlearn.data.parallel_corpus import load_parallel_corpus
from codeunlearn.data.tables import write_json
from codeunlearn.data.topics import Splits, build_splits, write_splits
from codeunlearn.evaluation.evaluator import normalized_drop
from codeunlearn.model import assets
from codeunlearn.model.loading import served_as_configured
from codeunlearn.model.surgery import (
    CodebookModel,
    decoder_layers,
    insert_bottleneck,
    load_codebook_model,
    save_codebook_model,
)
from codeunlearn.training.stamp import same_training, training_stamp
from codeunlearn.translation.metrics import TranslationScorer, keyword_pattern
from codeunlearn.translation.seq2seq import (
    is_seq2seq,
    source_batches,
    teacher_forced_nll,
    train_translation,
    translate,
    translation_batches,
)
from codeunlearn.unlearning.masks import apply_mask, mask_from_codes
from codeunlearn.unlearning.recipe import TopicBatches, counted_spans, mine_mask
from codeunlearn.unlearning.selection import random_codes

log = logging.getLogger(__name__)

SPLITS = ("topic", "rest")  # held-out forget split (the topic) and retain split (everything else)


@dataclass
class TranslationReport:
    """Metric scores per variant (base, codebook, masked@S', random@S') and split."""

    scores: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)  # variant->split->metric
    translations: dict[str, dict[str, list[str]]] = field(default_factory=dict)  # variant -> split -> outputs
    # variant -> split -> teacher-forced NLL of the references: `nll` (all target tokens), `term_nll`
    reference_nll: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    n_examples: dict[str, int] = field(default_factory=dict)
    n_eligible: int = 0
    elapsed_s: float = 0.0

    def normalized(self, variant: str, split: str, metric: str) -> float:
        """0 = base model, 1 = codebook model (the paper's scale); NaN when the two tie."""
        scores = self.scores
        drop = normalized_drop(
            scores["base"][split][metric], scores["codebook"][split][metric], scores[variant][split][metric]
        )
        return 1 - drop

    def relative(self, variant: str, split: str, metric: str) -> float:
        """Change over the codebook model as a fraction (the paper's "-66% BLEU")."""
        codebook = self.scores["codebook"][split][metric]
        return self.scores[variant][split][metric] / codebook - 1 if codebook else float("nan")

    def to_markdown(self) -> str:
        metrics = list(next(iter(self.scores.values()))["topic"])
        columns = [f"{split} {metric}" for split in SPLITS for metric in metrics]
        lines = [
            f"Held-out examples: topic {self.n_examples.get('topic', 0)}, "
            f"rest {self.n_examples.get('rest', 0)}; "
            f"{self.n_eligible} codes eligible for the topic.",
            "",
            "## Scores (0-100)",
            "| model | " + " | ".join(columns) + " |",
            "|---" * (1 + len(columns)) + "|",
        ]
        for variant, by_split in self.scores.items():
            cells = [_cell(by_split[s][m], "{:.2f}") for s in SPLITS for m in metrics]
            lines.append(f"| {variant} | " + " | ".join(cells) + " |")
        lines += [
            "",
            "## Normalised (0 = base, 1 = codebook) and change over the codebook model",
            "| model | " + " | ".join(columns) + " |",
            "|---" * (1 + len(columns)) + "|",
        ]
        for variant in self.scores:
            if variant == "base":
                continue
            cells = [
                f"{_cell(self.normalized(variant, s, m), '{:.2f}')} "
                f"({_cell(self.relative(variant, s, m), '{:+.0%}')})"
                for s in SPLITS
                for m in metrics
            ]
            lines.append(f"| {variant} | " + " | ".join(cells) + " |")
        return "\n".join(lines + self._nll_markdown()) + "\n"

    def _nll_markdown(self) -> list[str]:
        if not self.reference_nll:
            return []
        columns = [(s, m) for s in SPLITS for m in ("nll", "term_nll")]
        header = " | ".join(f"{s} {m}" for s, m in columns)
        lines = [
            "",
            "## Teacher-forced NLL of the references (nats/token; term_nll: the topic word's target tokens)",
            "Normalised drop in brackets: 0 = codebook model, 1 = base model.",
            f"| model | {header} |",
            "|---" * (1 + len(columns)) + "|",
        ]
        nll = self.reference_nll
        for variant, by_split in nll.items():
            cells = []
            for s, m in columns:
                value = by_split[s][m]
                drop = normalized_drop(nll["base"][s][m], nll["codebook"][s][m], value)
                cells.append(
                    _cell(value, "{:.3f}")
                    + ("" if variant in ("base", "codebook") else f" ({_cell(drop, '{:.2f}')})")
                )
            lines.append(f"| {variant} | " + " | ".join(cells) + " |")
        return lines


def _cell(value: float, form: str) -> str:
    """A table cell; "-" where a metric is undefined (e.g. `term` on a split without the topic word)."""
    return "-" if value != value else form.format(value)


def prepare_translation(config: RunConfig) -> Splits:
    """Parallel corpus -> global train/test by id hash -> the word topic's forget/control/retain splits."""
    paths = open_run(config)
    corpus = load_parallel_corpus(config.data, config.translation)
    if config.translation.whole_targets:
        corpus = _whole_targets(corpus, config)
    train_rows, test_rows = split_train_test(corpus, config.data.test_fraction)
    splits = build_splits(train_rows, test_rows, config.topic, config.seed)
    write_splits(splits, paths.splits_dir)
    paths.root.mkdir(parents=True, exist_ok=True)
    save_config(config, paths.root / "config.yaml")
    write_json(paths.root / "data" / "train_pairs.json", _training_pairs(train_rows, config))
    return splits


def _whole_targets(corpus: pa.Table, config: RunConfig) -> pa.Table:
    """The pairs whose target, as trained (space-led, plus EOS), fits in translation.max_target_tokens."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(assets.resolve_model_dir(config.model.name))
    targets = [" " + t for t in corpus["target"].to_pylist()]
    lengths = np.array([len(ids) for ids in tokenizer(targets, add_special_tokens=False)["input_ids"]])
    kept = corpus.filter(pa.array(lengths < config.translation.max_target_tokens))
    log.info(
        "translation.whole_targets: kept %d of %d pairs (targets under %d tokens)",
        kept.num_rows,
        corpus.num_rows,
        config.translation.max_target_tokens,
    )
    return kept


def _training_pairs(train_rows, config: RunConfig) -> dict[str, list[str]]:
    """A seeded sample of train-side pairs (all topics): the codebook is trained once, for every topic."""
    rng = np.random.default_rng(config.train.seed)
    picks = sorted(rng.permutation(train_rows.num_rows)[: config.train.max_examples].tolist())
    return {
        "sources": [train_rows["text"][i].as_py() for i in picks],
        "targets": [train_rows["target"][i].as_py() for i in picks],
    }


def train_translation_codebook(config: RunConfig) -> CodebookModel:
    """Insert the bottleneck into the base model, train it on translation pairs, save, or reuse a match."""
    paths = open_run(config)
    stamp = _stamp(config)
    stamp_file = paths.model_dir / "translation_stamp.json"
    if stamp_file.is_file() and same_training(json.loads(stamp_file.read_text()), stamp):
        log.info("reusing the translation codebook model in %s", paths.model_dir)
        device = assets.pick_device(config.model.device)
        return served_as_configured(load_codebook_model(paths.model_dir, device), config.bottleneck)
    model, tokenizer = assets.load_pretrained(config.model.name, assets.pick_device(config.model.device))
    config.bottleneck.validate(n_layers=len(decoder_layers(model)))
    pairs = json.loads((paths.root / "data" / "train_pairs.json").read_text())
    codebook_model = insert_bottleneck(model, tokenizer, config.bottleneck, config.model.name)
    batches = translation_batches(
        tokenizer,
        pairs["sources"],
        pairs["targets"],
        config.translation,
        is_seq2seq(model),
        config.train.batch_size,
    )
    result = train_translation(codebook_model, batches, config.train)
    log.info("trained %d steps in %.0f s, loss %.3f", result.steps, result.elapsed_s, result.final_loss)
    save_codebook_model(codebook_model, paths.model_dir)
    write_json(stamp_file, stamp)
    write_json(
        paths.root / "train" / "result.json", {k: v for k, v in asdict(result).items() if k != "history"}
    )
    return codebook_model


def mine_topic_codes(config: RunConfig, codebook_model: CodebookModel, splits: Splits) -> list[int]:
    """Codes ranked best first among those eligible for the topic (forget vs word-swapped control);
    under mining.positions=topic_words, counted at the topic words and their replacements only."""
    seq2seq, tokenizer = is_seq2seq(codebook_model.model), codebook_model.tokenizer
    spans = counted_spans(config.mining, config.topic, splits)
    batches = {
        name: source_batches(
            tokenizer,
            getattr(splits, f"{name}_train")["text"].to_pylist(),
            config.translation,
            seq2seq,
            config.mining.batch_size,
            spans.get(name),
        )
        for name in ("forget", "control")
    }
    mined = mine_mask(codebook_model, config.topic.key, TopicBatches(**batches), config.mining)
    log.info(
        "counted %d forget and %d control positions (mining.positions=%s)",
        mined.counts["forget"].n_tokens,
        mined.counts["control"].n_tokens,
        config.mining.positions,
    )
    return mined.ranked


def evaluate_translation(
    config: RunConfig, codebook_model: CodebookModel, splits: Splits, ranked: list[int]
) -> TranslationReport:
    """Translate the held-out topic and rest splits with every variant and score them."""
    started = time.perf_counter()
    wordnet = config.data.wordnet_dir if config.translation.wordnet_synonyms else None
    scorer = TranslationScorer(
        config.translation.metrics, wordnet, codebook_model.device.type, config.translation.target_keywords
    )
    sets = _eval_sets(config, splits)
    report = TranslationReport(n_examples={k: len(v[0]) for k, v in sets.items()}, n_eligible=len(ranked))
    tokenizer, batch_size = codebook_model.tokenizer, config.eval.batch_size

    def decode(model) -> dict[str, list[str]]:
        return {
            split: translate(model, tokenizer, sources, config.translation, batch_size)
            for split, (sources, _) in sets.items()
        }

    term_pattern = (
        keyword_pattern(config.translation.target_keywords) if config.translation.target_keywords else None
    )

    def record(variant: str, outputs: dict[str, list[str]], model: torch.nn.Module) -> None:
        report.reference_nll[variant] = {
            split: teacher_forced_nll(
                model, tokenizer, sources, targets, config.translation, batch_size, term_pattern
            )
            for split, (sources, targets) in sets.items()
        }
        report.translations[variant] = outputs
        report.scores[variant] = {
            split: scorer.score(outputs[split], targets) for split, (_, targets) in sets.items()
        }

    base_model = _load_base(config, codebook_model)  # scored every run; decoded only when not cached
    record("base", _base_translations(config, sets, lambda: decode(base_model)), base_model)
    record("codebook", decode(codebook_model.model), codebook_model.model)
    n_codes = codebook_model.bottleneck.n_codes
    for n_select in _sweep_sizes(config, len(ranked)):
        for name, code_ids in (
            (f"masked@{n_select}", ranked[:n_select]),
            (f"random@{n_select}", random_codes(n_codes, n_select, config.eval.random_seed).tolist()),
        ):
            apply_mask(codebook_model, mask_from_codes(n_codes, name, code_ids))
            try:
                record(name, decode(codebook_model.model), codebook_model.model)
            finally:
                apply_mask(codebook_model, None)
            log.info("%s: %s", name, report.scores[name])
    report.elapsed_s = time.perf_counter() - started
    return report


def _load_base(config: RunConfig, codebook_model: CodebookModel):
    return assets.load_pretrained(config.model.name, codebook_model.device.type)[0]


def _base_translations(config: RunConfig, sets: dict, compute) -> dict[str, list[str]]:
    """The base model's translations, cached in the run directory: they depend only on the base model,
    the evaluation pairs and the decoding settings (not on the metrics), and decoding an untrained
    model is the slow part."""
    decoding = {
        k: v for k, v in asdict(config.translation).items() if k not in ("metrics", "target_keywords")
    }
    key = hashlib.sha256(json.dumps([config.model.name, sets, decoding], sort_keys=True).encode()).hexdigest()
    path = RunPaths(Path(config.run_dir)).eval_dir / "base_translations.json"
    cached = json.loads(path.read_text()) if path.is_file() else {}
    if cached.get("key") == key:
        log.info("reusing the base model's translations from %s", path)
        return cached["translations"]
    translations = compute()
    write_json(path, {"key": key, "translations": translations})
    return translations


def _eval_sets(config: RunConfig, splits: Splits) -> dict[str, tuple[list[str], list[str]]]:
    limit = config.translation.max_eval_examples
    sets = {}
    for split, table in (("topic", splits.forget_test), ("rest", splits.retain_test)):
        rng = np.random.default_rng(config.seed)
        picks = sorted(rng.permutation(table.num_rows)[:limit].tolist())
        sets[split] = ([table["text"][i].as_py() for i in picks], [table["target"][i].as_py() for i in picks])
    return sets


def _sweep_sizes(config: RunConfig, n_eligible: int) -> list[int]:
    """The S' values to evaluate; those past the eligible codes give way to all eligible codes."""
    sizes = sorted(set(config.eval.sweep) | {config.mining.n_select})
    kept = [n for n in sizes if 0 < n <= n_eligible]
    if len(kept) < len(sizes):
        log.warning(
            "S' values %s exceed the %d eligible codes: evaluating S'=%d (all eligible) instead",
            [n for n in sizes if n not in kept],
            n_eligible,
            n_eligible,
        )
        kept = sorted(set(kept) | {n_eligible} - {0})
    return kept


def run_translation(config: RunConfig) -> TranslationReport:
    """prepare -> train (or reuse) -> mine -> evaluate across S'; writes eval/translation.{json,md}."""
    paths = open_run(config)
    splits = prepare_translation(config)
    codebook_model = train_translation_codebook(config)
    ranked = mine_topic_codes(config, codebook_model, splits)
    report = evaluate_translation(config, codebook_model, splits, ranked)
    write_json(paths.eval_dir / "translation.json", without_nan(asdict(report) | {"ranked_codes": ranked}))
    (paths.eval_dir / "translation.md").write_text(report.to_markdown())
    return report


def _stamp(config: RunConfig) -> dict:
    """The codebook training stamp plus the translation settings (those that only decode or score are
    left out of the comparison by `same_training`)."""
    translation = {k: v for k, v in asdict(config.translation).items() if k != "metrics"}
    return json.loads(json.dumps(training_stamp(config) | {"translation": translation}))
