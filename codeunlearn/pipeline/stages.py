"""The stages as library functions over one run directory: prepare, train, mine, unlearn, evaluate.

Each stage reads what the previous one wrote under `config.run_dir`, so the CLI, the Prefect tasks
and the tests call the same functions. Every write is atomic: a failed stage leaves nothing behind.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from codeunlearn.core.config import RunConfig, save_config
from codeunlearn.core.errors import CodeunlearnError
from codeunlearn.data.batching import Batch, encode_texts, make_batches
from codeunlearn.data.corpus import content_hash, load_corpus, split_train_test
from codeunlearn.data.positions import Span, split_spans, token_flags
from codeunlearn.data.topic_words import keyword_free_rows
from codeunlearn.data.topics import Splits, build_splits, read_splits, topic_pattern, train_side, write_splits
from codeunlearn.evaluation.evaluator import KEYWORD_FREE, EvalReport, EvalSet, Evaluator
from codeunlearn.evaluation.reference import reference_nll
from codeunlearn.model import assets
from codeunlearn.model.serving import ServingPolicy
from codeunlearn.model.surgery import (
    CodebookModel,
    decoder_layers,
    insert_bottleneck,
    load_codebook_model,
    save_codebook_model,
    weights_hash,
)
from codeunlearn.store.code_store import CodeStore
from codeunlearn.training import distributed
from codeunlearn.training.trainer import TrainResult, train
from codeunlearn.unlearning.masks import Mask, check_detectors, load_mask, mask_from_codes, save_mask
from codeunlearn.unlearning.mining import count_codes
from codeunlearn.unlearning.selection import SelectedCodes, random_codes, select_codes
from codeunlearn.unlearning.topic_detector import PromptSet, TopicDetector, fit_prompt_detector

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunPaths:
    """Where each stage keeps its outputs inside the run directory."""

    root: Path

    @property
    def corpus_dir(self) -> Path:
        return self.root / "data" / "corpus"

    @property
    def splits_dir(self) -> Path:
        return self.root / "data" / "topic"

    @property
    def model_dir(self) -> Path:
        return self.root / "model"

    @property
    def checkpoint_dir(self) -> Path:
        return self.root / "checkpoints"

    @property
    def store_dir(self) -> Path:
        return self.root / "store"

    @property
    def selection_file(self) -> Path:
        return self.root / "mining" / "selected.json"

    @property
    def active_mask(self) -> Path:
        return self.root / "masks" / "active.json"

    @property
    def eval_dir(self) -> Path:
        return self.root / "eval"

    @property
    def unlearned_dir(self) -> Path:
        """Models a gradient baseline edited (`unlearned/<method>/`), kept beside the mask."""
        return self.root / "unlearned"


def setup(config: RunConfig) -> RunPaths:
    """Apply process-wide settings (offline mode, threads) and return the run's paths."""
    assets.set_offline(config.offline)
    if config.model.threads:
        torch.set_num_threads(config.model.threads)
    return RunPaths(Path(config.run_dir))


# ---------------------------------------------------------------- prepare


def prepare(config: RunConfig) -> Splits:
    """Load the corpus, partition it train/test by id hash, and build the topic's splits."""
    paths = setup(config)
    corpus = load_corpus(config.data)
    train_rows, test_rows = split_train_test(corpus, config.data.test_fraction)
    splits = build_splits(train_rows, test_rows, config.topic, config.seed)
    _write_tables(
        paths.corpus_dir,
        {"train": train_rows, "test": test_rows},
        {
            "rows": corpus.num_rows,
            "train": train_rows.num_rows,
            "test": test_rows.num_rows,
            "content_hash": content_hash(corpus.column("text").to_pylist()),
        },
    )
    write_splits(splits, paths.splits_dir)
    save_config(config, paths.root / "config.yaml")
    log.info(
        "prepared %s: %s", config.topic.key, {k: v["count"] for k, v in splits.manifest["splits"].items()}
    )
    return splits


def _write_tables(directory: Path, tables: dict[str, pa.Table], manifest: dict) -> None:
    partial = directory.with_name(directory.name + ".partial")
    partial.mkdir(parents=True, exist_ok=True)
    for name, table in tables.items():
        pq.write_table(table, partial / f"{name}.parquet")
    (partial / "manifest.json").write_text(json.dumps(manifest, indent=2))
    if directory.exists():
        shutil.rmtree(directory)
    os.replace(partial, directory)


def read_table(path: Path) -> pa.Table:
    if not path.is_file():
        raise CodeunlearnError(f"{path} is missing: run `codeunlearn prepare` with the same run_dir first")
    return pq.read_table(path)


def batch_texts(
    texts: list[str], tokenizer, config: RunConfig, batch_size: int, spans: list[list[Span]] | None = None
) -> list[Batch]:
    """Batches of BOS + text (truncated to data.max_length); with `spans`, mining counts only the
    tokens that overlap them."""
    ids = encode_texts(tokenizer, texts, config.data.max_length)
    flags = None
    if spans is not None:
        flags = [f[: len(i)] for f, i in zip(token_flags(tokenizer, texts, spans, lead=1), ids, strict=True)]
    return make_batches(ids, batch_size, tokenizer.pad_token_id, flags)


def training_texts(config: RunConfig) -> list[str]:
    """A seeded sample of the train partition (the codebook is trained once, for every topic), with
    `train.general_fraction` of the examples taken from `train.general_text` when that is set."""
    train = config.train
    n_general = round(train.general_fraction * train.max_examples) if train.general_text else 0
    train_rows = read_table(RunPaths(Path(config.run_dir)).corpus_dir / "train.parquet")
    rng = np.random.default_rng(train.seed)
    picks = rng.permutation(train_rows.num_rows)[: train.max_examples - n_general]
    texts = train_rows.column("text").to_pylist()
    corpus = [texts[i] for i in sorted(picks)]
    if not n_general:
        return corpus
    from codeunlearn.evaluation.general_text import training_passages

    general = training_passages(train.general_text, n_general, train.seed)
    log.info("training texts: %d corpus examples and %d general-text passages", len(corpus), len(general))
    return corpus + general  # batching groups texts by length and training shuffles the batches


# ---------------------------------------------------------------- train


def train_codebook(config: RunConfig) -> TrainResult:
    """Insert a bottleneck into the base model, train it, and save the codebook model.

    Under `torchrun --nproc_per_node N` the processes train data-parallel (codeunlearn.training.distributed);
    only rank 0 writes checkpoints, the model and the result.
    """
    paths = setup(config)
    parallel = distributed.init_from_environment(assets.pick_device(config.model.device))
    device = distributed.process_device(assets.pick_device(config.model.device), parallel)
    model, tokenizer = assets.load_pretrained(config.model.name, device)
    config.bottleneck.validate(n_layers=len(decoder_layers(model)))
    texts = training_texts(config)
    codebook_model = insert_bottleneck(model, tokenizer, config.bottleneck, config.model.name)
    batches = batch_texts(texts, tokenizer, config, config.train.batch_size)
    log.info("training %s codebook on %d examples (%d batches)", config.train.mode, len(texts), len(batches))
    checkpoint_dir = _checkpoints_for(config, paths) if parallel.is_main else paths.checkpoint_dir
    distributed.barrier(parallel)  # stale checkpoints are gone before any process resumes
    result = train(codebook_model, batches, config.train, checkpoint_dir=checkpoint_dir)
    if not parallel.is_main:
        return result
    save_codebook_model(codebook_model, paths.model_dir)
    _write_json(paths.model_dir / "training_config.json", training_stamp(config))
    shutil.rmtree(paths.checkpoint_dir, ignore_errors=True)  # the saved model supersedes them
    _write_json(
        paths.root / "train" / "result.json", {k: v for k, v in asdict(result).items() if k != "history"}
    )
    log.info("trained %d steps in %.0f s; saved to %s", result.steps, result.elapsed_s, paths.model_dir)
    return result


def _checkpoints_for(config: RunConfig, paths: RunPaths) -> Path:
    """The checkpoint directory, emptied first if its checkpoints come from other training settings."""
    stamp_path = paths.checkpoint_dir / "training_config.json"
    if stamp_path.is_file() and not same_training(json.loads(stamp_path.read_text()), training_stamp(config)):
        log.info("discarding checkpoints in %s: they were made with other settings", paths.checkpoint_dir)
        shutil.rmtree(paths.checkpoint_dir)
    _write_json(stamp_path, training_stamp(config))
    return paths.checkpoint_dir


def load_model(config: RunConfig) -> CodebookModel:
    """The run's trained codebook model, searching codes and masking as `config.bottleneck` says: a
    model trained with exact search can be mined, evaluated and served with the grouped search, and
    back, and under either mask policy."""
    paths = setup(config)
    codebook_model = load_codebook_model(paths.model_dir, assets.pick_device(config.model.device))
    return served_as_configured(codebook_model, config)


def served_as_configured(codebook_model: CodebookModel, config: RunConfig) -> CodebookModel:
    """Apply the configured code search and mask policy, which training does not fix, to a model."""
    codebook_model.bottleneck.serve(ServingPolicy.of(config.bottleneck))
    return codebook_model


# ---------------------------------------------------------------- mine


def mine(config: RunConfig, codebook_model: CodebookModel | None = None) -> SelectedCodes:
    """Count code firings on the forget, control and retain sets, store them, select S' codes."""
    paths = setup(config)
    splits = read_splits(paths.splits_dir)
    _check_prepared_control(config, splits, paths)  # before the model loads
    codebook_model = codebook_model or load_model(config)
    config.mining.validate(codebook_model.bottleneck.n_codes)
    store = CodeStore(paths.store_dir)
    run_id = _counts_run_id(config, splits, weights_hash(paths.model_dir))
    tokenizer = codebook_model.tokenizer
    spans = counted_spans(config, splits)
    detector = prompt_detector(config, codebook_model)  # first: a corpus without prompts stops here
    counts = {}
    for split in ("forget", "control", "retain"):
        table = getattr(splits, f"{split}_train")
        texts = table.column("text").to_pylist()
        batches = batch_texts(texts, tokenizer, config, config.mining.batch_size, spans.get(split))
        counts[split] = count_codes(codebook_model, batches, desc=f"mining {split}")
        store.replace_counts(run_id, split, config.topic.key, counts[split])
    selected = select_codes(counts["forget"], counts["control"], config.mining)
    eligible = select_codes(counts["forget"], counts["control"], replace(config.mining, n_select=0))
    order = np.lexsort((eligible.code_ids, -eligible.scores))  # best first, ties by lower id
    _write_json(
        paths.selection_file,
        {
            "topic": config.topic.key,
            "counts_run": run_id,
            "rule": selected.rule,
            "n_eligible": selected.n_eligible,
            "code_ids": selected.code_ids.tolist(),
            "scores": selected.scores.tolist(),
            "ranked_eligible": eligible.code_ids[order].tolist(),  # for sweeps past n_select
            "data_hash": splits.manifest["splits"]["forget_train"]["content_hash"],
            **({"detector": asdict(detector)} if detector is not None else {}),
        },
    )
    log.info(
        "selected %d codes (%d eligible) for %s",
        len(selected.code_ids),
        selected.n_eligible,
        config.topic.key,
    )
    return selected


def prompt_detector(
    config: RunConfig,
    codebook_model: CodebookModel,
    topic_texts: list[str] | None = None,
    negatives: PromptSet | None = None,
) -> TopicDetector | None:
    """The topic's prompt detector (mining.detector_recall > 0), fitted on the prompts of
    `topic_texts` (default: every training text of the topic) against those of `negatives` (default:
    `detector_negatives`); else None."""
    if not config.mining.detector_recall:
        return None
    paths = setup(config)
    if topic_texts is None:
        topic, _ = train_side(
            read_table(paths.corpus_dir / "train.parquet"),
            read_table(paths.corpus_dir / "test.parquet"),
            config.topic,
        )
        topic_texts = topic.column("text").to_pylist()
    others = detector_negatives(config) if negatives is None else negatives
    log.info(
        "fitting the prompt detector on %d topic and %d other texts, at recall %.2f",
        len(topic_texts),
        others.n_texts if isinstance(others, PromptSet) else len(others),
        config.mining.detector_recall,
    )
    return fit_prompt_detector(
        codebook_model,
        topic_texts,
        others,
        config.mining.detector_recall,
        config.data.max_length,
        seed=config.seed,
    )


def detector_negatives(config: RunConfig) -> list[str]:
    """The other texts a topic's prompt detector is fitted against: mining.detector_negatives training
    texts outside the topic, drawn with the run's seed from the corpus's train side (the held-out
    evaluation never sees them)."""
    paths = setup(config)
    _, other = train_side(
        read_table(paths.corpus_dir / "train.parquet"),
        read_table(paths.corpus_dir / "test.parquet"),
        config.topic,
    )
    rng = np.random.default_rng(config.seed)
    rows = np.sort(
        rng.choice(other.num_rows, min(config.mining.detector_negatives, other.num_rows), replace=False)
    )
    return other.take(rows).column("text").to_pylist()


def counted_spans(config: RunConfig, splits: Splits) -> dict[str, list[list[Span]]]:
    """The forget and control spans mining counts under mining.positions=topic_words; else none."""
    if config.mining.positions != "topic_words":
        return {}
    return split_spans(splits.forget_train, splits.control_train, topic_pattern(config.topic))


def _counts_run_id(config: RunConfig, splits: Splits, model_weights: str = "") -> str:
    """The code-store run that mining's counts go to: one id per sets counted and model counting them,
    so a retrained model's counts never mix with the last model's (collateral reuses stored counts)."""
    import hashlib

    # A control other than auto adds itself and the control set's hash, so counts of another control
    # never sum with these; auto keeps the key it had before topic.control existed.
    control = splits.manifest.get("control", "auto")
    control_key = [control, splits.manifest["splits"]["control_train"]["content_hash"]]
    key = json.dumps(
        [
            config.topic.name,
            splits.manifest["splits"]["forget_train"]["content_hash"],
            *([config.mining.positions] if config.mining.positions != "all" else []),
            *(control_key if control != "auto" else []),
            str(Path(config.run_dir).resolve()),
            *([model_weights] if model_weights else []),
        ]
    )
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def _check_prepared_control(config: RunConfig, splits: Splits, paths: RunPaths) -> None:
    """Refuse to mine splits whose control set was built another way than the config asks."""
    prepared = splits.manifest.get("control", "auto")  # splits from before topic.control: auto
    if prepared != config.topic.control:
        raise CodeunlearnError(
            f"the splits in {paths.splits_dir} were prepared with topic.control={prepared}, but the config "
            f"asks for topic.control={config.topic.control}: run `codeunlearn prepare` with this config first"
        )


# ---------------------------------------------------------------- unlearn


def unlearn(config: RunConfig, n_codes: int | None = None) -> Mask:
    """Turn the selected codes into a mask, union it with the active mask, and save it. No gradients."""
    paths = setup(config)
    if not paths.selection_file.is_file():
        raise CodeunlearnError(f"no selected codes at {paths.selection_file}: run `codeunlearn mine` first")
    selection = json.loads(paths.selection_file.read_text())
    n_codes = n_codes or config.bottleneck.n_codes
    new = mask_from_codes(
        n_codes,
        selection["topic"],
        selection["code_ids"],
        rule=selection["rule"],
        data_hash=selection["data_hash"],
        counts_run=selection["counts_run"],
        detector=TopicDetector.from_dict(selection["detector"]) if "detector" in selection else None,
    )
    if config.bottleneck.mask_condition == "prompt" and new.sources[0].detector is None:
        raise CodeunlearnError(
            f"bottleneck.mask_condition=prompt, but {paths.selection_file} holds no prompt detector: run "
            "`codeunlearn mine` with mining.detector_recall > 0 first"
        )
    active = load_mask(paths.active_mask) if paths.active_mask.is_file() else Mask(n_codes)
    if selection["topic"] in {s.name for s in active.sources}:
        active = active.without(selection["topic"])  # re-unlearning a topic replaces its earlier codes
    mask = active.union(new)
    if config.bottleneck.mask_condition == "prompt":
        check_detectors(mask)
    save_mask(mask, paths.root / "masks" / f"mask-{mask.digest[:12]}.json")
    save_mask(mask, paths.active_mask)
    log.info(
        "mask %s now disables %d codes (%d sources)", mask.digest[:12], len(mask.code_ids), len(mask.sources)
    )
    return mask


def forget_source(config: RunConfig, name: str) -> Mask:
    """Remove one source (topic or request) from the active mask: the deletion is undone."""
    paths = setup(config)
    mask = load_mask(paths.active_mask).without(name)
    save_mask(mask, paths.root / "masks" / f"mask-{mask.digest[:12]}.json")
    save_mask(mask, paths.active_mask)
    return mask


# ---------------------------------------------------------------- evaluate


def evaluation_sets(config: RunConfig, tokenizer) -> list[EvalSet]:
    return eval_sets_of(read_splits(RunPaths(Path(config.run_dir)).splits_dir), config, tokenizer)


def eval_sets_of(splits: Splits, config: RunConfig, tokenizer) -> list[EvalSet]:
    """The held-out forget set (with its keyword-free examples as a subset, scored as the split
    `forget_keyword_free` when there are any) and the retain set grouped by topic, batched."""
    sets = []
    for name in ("forget", "retain"):
        table = getattr(splits, f"{name}_test")
        texts = table.column("text").to_pylist()
        groups = table.column("topic").to_pylist() if "topic" in table.column_names else [name] * len(texts)
        groups = [str(g) if g is not None else name for g in groups]
        keyword_free = keyword_free_rows(table) if name == "forget" else []
        sets.append(
            EvalSet(
                name,
                batch_texts(texts, tokenizer, config, config.eval.batch_size),
                groups,
                subsets={KEYWORD_FREE: keyword_free} if len(keyword_free) else {},
            )
        )
    return sets


def evaluate(config: RunConfig, codebook_model: CodebookModel | None = None) -> EvalReport:
    """NLL on held-out forget and retain splits for base, codebook, masked, random-mask models, every
    model a gradient baseline edited (`unlearned/<method>/`), and the S' sweep; writes eval/report.json
    and eval/report.md."""
    paths = setup(config)
    codebook_model = codebook_model or load_model(config)
    mask = load_mask(paths.active_mask) if paths.active_mask.is_file() else None
    splits = read_splits(paths.splits_dir)
    evaluator = Evaluator(codebook_model, eval_sets_of(splits, config, codebook_model.tokenizer))
    report = EvalReport()
    started = time.perf_counter()
    base_model, _ = assets.load_pretrained(config.model.name, codebook_model.device.type)
    report.nll["base"] = evaluator.score_model(base_model)
    del base_model
    if config.eval.run_reference:
        report.nll["reference"] = reference_nll(config, evaluator, training_texts(config), paths.eval_dir)
    report.nll["codebook"] = evaluator.score_codebook(None)
    if mask is not None and mask.code_ids:
        n_codes = codebook_model.bottleneck.n_codes
        report.nll["masked"] = evaluator.score_codebook(mask)
        control = random_codes(n_codes, len(mask.code_ids), config.eval.random_seed)
        report.nll["random"] = evaluator.score_codebook(mask_from_codes(n_codes, "random", control.tolist()))
    from codeunlearn.pipeline import baseline_stage

    unlearned = baseline_stage.score_edited_models(config, evaluator.eval_sets, report)
    report.sweep = _sweep(config, evaluator, report)
    keyword_free = keyword_free_summary(splits, report)
    report.notes.append(_keyword_free_note(keyword_free))
    _write_json(
        paths.eval_dir / "report.json",
        {
            "nll": report.nll,
            "sweep": report.sweep,
            "keyword_free": keyword_free,
            "mask_digest": mask.digest if mask else None,
            "elapsed_s": time.perf_counter() - started,
            **({"unlearned": unlearned} if unlearned else {}),  # models a gradient baseline edited
        },
    )
    (paths.eval_dir / "report.md").write_text(render_report(report))
    return report


def keyword_free_summary(splits: Splits, report: EvalReport) -> dict:
    """The keyword-free forget split of an evaluation: its size, the words it avoids, and the masked
    and random-mask drops on it; or why it was skipped.

    Args:
        splits: The prepared splits, whose manifest describes the split.
        report: The evaluation, scored on it when it is not empty.

    Returns:
        `examples` and `of` (held-out forget examples), `n_words` where the words were ranked,
        `masked_drop` and `random_drop` where a mask was scored, else `skipped`: the reason.
    """
    entry = splits.manifest.get("keyword_free")
    if entry is None:
        reason = "the splits were prepared before the keyword-free split existed: run `codeunlearn prepare`"
        entry = {"count": 0, "of": splits.forget_test.num_rows, "skipped": reason}
    summary = {"examples": entry["count"], "of": entry["of"], "words_from": entry.get("words_from", "")}
    summary |= {key: entry[key] for key in ("n_words", "skipped") if key in entry}
    if "skipped" in entry:
        log.info("keyword-free forget split skipped: %s", entry["skipped"])
    elif "masked" in report.nll:
        summary |= {variant + "_drop": report.drop(variant, KEYWORD_FREE) for variant in ("masked", "random")}
    return summary


def _keyword_free_note(summary: dict) -> str:
    if "skipped" in summary:
        return f"{KEYWORD_FREE}: none ({summary['skipped']})"
    return (
        f"{KEYWORD_FREE}: the {summary['examples']} of {summary['of']} held-out forget examples that contain "
        f"none of the topic's {summary.get('n_words', 0)} most indicative words"
    )


def _sweep(config: RunConfig, evaluator: Evaluator, report: EvalReport) -> list[dict[str, float]]:
    paths = RunPaths(Path(config.run_dir))
    if not config.eval.sweep or not paths.selection_file.is_file():
        return []
    selection = json.loads(paths.selection_file.read_text())
    ranked = selection["ranked_eligible"]
    n_codes = evaluator.codebook_model.bottleneck.n_codes
    rows = []
    for n_select in config.eval.sweep:
        if n_select > len(ranked):
            log.warning("sweep S'=%d skipped: only %d codes are eligible", n_select, len(ranked))
            continue
        mined = evaluator.score_codebook(mask_from_codes(n_codes, "sweep", ranked[:n_select]))
        random = evaluator.score_codebook(
            mask_from_codes(
                n_codes, "random", random_codes(n_codes, n_select, config.eval.random_seed).tolist()
            )
        )
        report.nll[f"mined@{n_select}"], report.nll[f"random@{n_select}"] = mined, random
        rows.append(
            {
                "n_select": n_select,
                "mined_forget_drop": report.drop(f"mined@{n_select}", "forget"),
                "mined_retain_delta": report.delta(f"mined@{n_select}", "retain"),
                "random_forget_drop": report.drop(f"random@{n_select}", "forget"),
                "random_retain_delta": report.delta(f"random@{n_select}", "retain"),
            }
        )
    return rows


def render_report(report: EvalReport) -> str:
    """The Markdown summary printed at the end of `codeunlearn run`."""
    return report.render()


def _write_json(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(payload, indent=2, default=float))
    os.replace(partial, path)


def run_all(config: RunConfig) -> EvalReport:
    """prepare -> train -> mine -> unlearn -> evaluate, reusing a trained model already in run_dir
    when it was trained with the same model, data, bottleneck and training settings. With a gradient
    `unlearn.method`, that baseline edits a copy of the codebook model in place of mining and masking."""
    prepare(config)
    if trained_model_matches(config):
        log.info("reusing the trained codebook model in %s", RunPaths(Path(config.run_dir)).model_dir)
    else:
        train_codebook(config)
    if config.unlearn.uses_gradients:
        from codeunlearn.pipeline import baseline_stage

        baseline_stage.unlearn_with_baseline(config)
        return evaluate(config)
    codebook_model = load_model(config)
    mine(config, codebook_model)
    unlearn(config, codebook_model.bottleneck.n_codes)
    return evaluate(config, codebook_model)


def trained_model_matches(config: RunConfig) -> bool:
    """Whether run_dir holds a model trained with this config's model, data, bottleneck and training."""
    stored = _read_stamp(RunPaths(Path(config.run_dir)))
    return stored is not None and same_training(stored, training_stamp(config))


# Settings that do not change what training produces: speed knobs, the mask policy and gate (training never
# runs with a mask; `load_model` applies the configured policy), and the translation setting's
# decoding and scoring. And settings added after models were first saved, compared only when set
# away from the value they had before they existed.
_TRAINING_NEUTRAL = {
    "bottleneck": (
        "chunk_tokens",
        "chunk_codes",
        "mask_policy",
        "mask_gate",
        "mask_context_gate",
        "mask_context_after",
        "mask_condition",
    ),
    "train": ("compile",),
    "translation": ("metrics", "target_keywords", "max_new_tokens", "max_eval_examples", "wordnet_synonyms"),
}
_ADDED_LATER = {
    "bottleneck": {"coarse_candidates": 0, "search": "exact", "search_groups": 0, "search_probes": 8},
    "train": {"general_text": "", "general_fraction": 0.25},
    "translation": {"whole_targets": False},
}


def same_training(stored: dict, current: dict) -> bool:
    """Whether two training stamps describe the same trained model."""

    def comparable(stamp: dict) -> dict:
        sections = {}
        for section in _TRAINING_NEUTRAL:
            added = _ADDED_LATER.get(section, {})
            sections[section] = {
                k: v
                for k, v in stamp.get(section, {}).items()
                if k not in _TRAINING_NEUTRAL[section] and not (k in added and v == added[k])
            }
        return {**stamp, **sections}

    return comparable(stored) == comparable(current)


def training_stamp(config: RunConfig) -> dict:
    stamp = {
        "model": config.model.name,
        "data": asdict(config.data),
        "bottleneck": asdict(config.bottleneck),
        "train": asdict(config.train),
    }
    return json.loads(json.dumps(stamp))


def _read_stamp(paths: RunPaths) -> dict | None:
    stamp = paths.model_dir / "training_config.json"
    return json.loads(stamp.read_text()) if stamp.is_file() else None
