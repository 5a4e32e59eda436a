"""The stages over one run directory: prepare, train, mine, unlearn (evaluate is in `evaluate.py`).

Each stage reads what the previous one wrote under `config.run_dir`, so the CLI, the Prefect tasks
and the tests call the same functions. Every write is atomic: a failed stage leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from dataclasses import asdict, replace
from pathlib import Path

from codeunlearn.core.config import RunConfig, TopicConfig, save_config
from codeunlearn.core.errors import CodeunlearnError
from codeunlearn.core.paths import RunPaths, open_run, run_paths
from codeunlearn.data.corpus import content_hash, load_corpus, split_train_test
from codeunlearn.data.forgotten import source_topics
from codeunlearn.data.tables import batch_texts, write_json, write_tables
from codeunlearn.data.topics import Splits, build_splits, read_splits, write_splits
from codeunlearn.evaluation.calibrated import calibrate_topic, held_out_pool, texts_of, validation_of
from codeunlearn.model import assets
from codeunlearn.model.loading import load_model
from codeunlearn.model.precision import trains_in_bf16
from codeunlearn.model.surgery import (
    CodebookModel,
    decoder_layers,
    insert_bottleneck,
    save_codebook_model,
    weights_hash,
)
from codeunlearn.pipeline.training_texts import training_routes, training_sample, validation_seen_texts
from codeunlearn.store.code_store import CodeStore
from codeunlearn.training import distributed
from codeunlearn.training.stamp import STAMP_FILE, same_training, training_stamp
from codeunlearn.training.trainer import TrainResult, train
from codeunlearn.unlearning.active_mask import (
    Candidate,
    activate,
    codebook_weights,
    propose,
    read_active,
    start_lineage,
    update_active,
)
from codeunlearn.unlearning.calibration import Calibration
from codeunlearn.unlearning.masks import Mask, check_detectors, mask_from_codes
from codeunlearn.unlearning.recipe import MinedMask, detector_data, mine_mask, topic_batches
from codeunlearn.unlearning.selection import SelectedCodes, select_codes
from codeunlearn.unlearning.topic_detector import TopicDetector

log = logging.getLogger(__name__)


def prepare(config: RunConfig, forgotten: tuple[TopicConfig, ...] | None = None) -> Splits:
    """Load the corpus, partition it train/test by id hash, and build the topic's splits.

    `forgotten`: the topics the active mask already forgets besides this one, left out of the retain
    sets that calibration and evaluation judge beside that mask (codeunlearn.data.forgotten). None:
    the topics of the active mask's pipeline sources; its request sources need the request store,
    which the tracked stage reads (codeunlearn.tracking.stages), and here are skipped with a log line.
    """
    paths = open_run(config)
    corpus = load_corpus(config.data)
    train_rows, test_rows = split_train_test(corpus, config.data.test_fraction)
    if forgotten is None:
        forgotten = source_topics(active_sources(paths), config.topic, config.topic.key)
    seen = validation_seen_texts(config, train_rows)
    splits = build_splits(train_rows, test_rows, config.topic, config.seed, forgotten, seen)
    write_tables(
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


def train_codebook(config: RunConfig) -> TrainResult:
    """Insert a bottleneck into the base model, train it, and save the codebook model.

    Under `torchrun --nproc_per_node N` the processes train data-parallel (codeunlearn.training.distributed);
    only rank 0 writes checkpoints, the model and the result.
    """
    paths = open_run(config)
    parallel = distributed.init_from_environment(assets.pick_device(config.model.device))
    device = distributed.process_device(assets.pick_device(config.model.device), parallel)
    model, tokenizer = assets.load_pretrained(config.model.name, device)
    config.bottleneck.validate(n_layers=len(decoder_layers(model)))
    texts, labels = training_sample(config)
    routes = training_routes(config, labels)
    codebook_model = insert_bottleneck(model, tokenizer, config.bottleneck, config.model.name)
    batches = batch_texts(texts, tokenizer, config.data.max_length, config.train.batch_size)
    log.info(
        "training %s codebook on %d examples (%d batches, %s)",
        config.train.mode,
        len(texts),
        len(batches),
        "bf16 autocast" if trains_in_bf16(device, config.train.precision) else "fp32",
    )
    checkpoint_dir = _checkpoints_for(config, paths) if parallel.is_main else paths.checkpoint_dir
    distributed.barrier(parallel)  # stale checkpoints are gone before any process resumes
    result = train(codebook_model, batches, config.train, checkpoint_dir=checkpoint_dir, routes=routes)
    if not parallel.is_main:
        return result
    previous = codebook_weights(paths)
    save_codebook_model(codebook_model, paths.model_dir)
    write_json(paths.model_dir / STAMP_FILE, training_stamp(config))
    if routes is not None:
        routes.routes.save(paths.model_dir)
    follow_codebook(config, previous)
    shutil.rmtree(paths.checkpoint_dir, ignore_errors=True)  # the saved model supersedes them
    write_json(
        paths.root / "train" / "result.json", {k: v for k, v in asdict(result).items() if k != "history"}
    )
    log.info("trained %d steps in %.0f s; saved to %s", result.steps, result.elapsed_s, paths.model_dir)
    return result


def follow_codebook(config: RunConfig, previous: str = "") -> None:
    """Start a new lineage of the active mask if it is over other weights than the saved codebook's
    (its code ids would name other codes): the old mask is archived, the active one starts empty.
    Training calls it; a stage that reuses the trained model calls it too, so a run killed between
    saving the model and this step is put right. `previous`: the weights training replaced."""
    archive = start_lineage(run_paths(config), config.bottleneck.n_codes, previous)
    if archive is not None:
        log.warning(
            "the codebook was retrained: the active mask of the previous codebook is archived at %s and "
            "the active mask starts empty (answered deletion requests are carried over when the tracked "
            "pipeline registers the new codebook)",
            archive,
        )


def _checkpoints_for(config: RunConfig, paths: RunPaths) -> Path:
    """The checkpoint directory, emptied first if its checkpoints come from other training settings."""
    stamp_path = paths.checkpoint_dir / STAMP_FILE
    if stamp_path.is_file() and not same_training(json.loads(stamp_path.read_text()), training_stamp(config)):
        log.info("discarding checkpoints in %s: they were made with other settings", paths.checkpoint_dir)
        shutil.rmtree(paths.checkpoint_dir)
    write_json(stamp_path, training_stamp(config))
    return paths.checkpoint_dir


def mine(config: RunConfig, codebook_model: CodebookModel | None = None) -> SelectedCodes:
    """Count code firings on the forget, control and retain sets, store them, select S' codes."""
    paths = open_run(config)
    splits = read_splits(paths.splits_dir)
    _check_prepared_control(config, splits, paths)  # before the model loads
    codebook_model = codebook_model or load_model(config)
    config.mining.validate(codebook_model.bottleneck.n_codes)
    store = CodeStore(paths.store_dir)
    run_id = _counts_run_id(config, splits, weights_hash(paths.model_dir))
    data_hash = splits.manifest["splits"]["forget_train"]["content_hash"]
    mined = mine_mask(
        codebook_model,
        config.topic.key,
        topic_batches(
            config.mining,
            config.topic,
            config.data.max_length,
            splits,
            codebook_model.tokenizer,
            with_retain=True,
        ),
        config.mining,
        detector_data(config, splits=splits),
        on_counts=lambda split, counts: store.replace_counts(run_id, split, config.topic.key, counts),
        data_hash=data_hash,
        counts_run=run_id,
    )
    selected, calibration = mined.selected, None
    if config.calibration.enabled:
        calibration = _calibrate(config, codebook_model, splits, mined, paths)
        size = calibration.best.n_select if calibration.best else 0
        selected = select_codes(
            mined.counts["forget"], mined.counts["control"], replace(config.mining, n_select=size)
        )
    write_json(
        paths.selection_file,
        {
            "topic": config.topic.key,
            "counts_run": run_id,
            "rule": selected.rule,
            "n_eligible": selected.n_eligible,
            "code_ids": selected.code_ids.tolist(),
            "scores": selected.scores.tolist(),
            "ranked_eligible": mined.ranked,  # for sweeps past n_select
            "data_hash": data_hash,
            **({"detector": asdict(mined.detector)} if mined.detector is not None else {}),
            **({"calibration": calibration.summary()} if calibration is not None else {}),
        },
    )
    log.info(
        "selected %d codes (%d eligible) for %s",
        len(selected.code_ids),
        selected.n_eligible,
        config.topic.key,
    )
    return selected


def active_sources(paths: RunPaths) -> list[str]:
    """The names of the active mask's sources; none without an active mask."""
    active = read_active(paths)
    return [source.name for source in active.sources] if active is not None else []


def _calibrate(
    config: RunConfig, codebook_model: CodebookModel, splits: Splits, mined: MinedMask, paths: RunPaths
) -> Calibration:
    """S' for the config's topic, chosen on its validation split beside the active mask. When no size
    clears both gates there, the nearest miss is selected and the gates (evaluate) turn it down."""
    base, _ = assets.load_pretrained(config.model.name, codebook_model.device.type)
    pool = held_out_pool(
        codebook_model, base, config.data.max_length, config.eval.batch_size, config.train.mode
    )
    texts = texts_of(splits, sides=("val",))
    pool.add(list(texts), list(texts.values()), desc="scoring validation texts")
    calibration = calibrate_topic(
        pool,
        validation_of(splits),
        mined.ranked,
        codebook_model.bottleneck.n_codes,
        config.calibration,
        config.gates,
        splits.forget_train.num_rows,
        _active_besides(read_active(paths), config.topic.key),
        detector=mined.detector,
    )
    if calibration.passed:
        log.info("calibration chose S' = %d on the validation split", calibration.chosen.n_select)
    else:
        log.warning("calibration: no S' clears both gates on validation: %s", calibration.reason)
    return calibration


def _active_besides(active: Mask | None, topic: str) -> Mask | None:
    """The active mask without the topic's own source: a rerun replaces that source (`with_source`), so
    calibrating beside it would count the old codes as already masked and pick too small an S'."""
    if active is None or topic not in {source.name for source in active.sources}:
        return active
    return active.without(topic)


def _counts_run_id(config: RunConfig, splits: Splits, model_weights: str = "") -> str:
    """The code-store run that mining's counts go to: one id per sets counted and model counting them,
    so a retrained model's counts never mix with the last model's (collateral reuses stored counts)."""
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


def unlearn(config: RunConfig, n_codes: int | None = None) -> Mask:
    """Turn the selected codes into a mask, union it with the active mask, and activate it at once (no
    gates: the untracked path). No gradients."""
    paths = open_run(config)
    candidate = propose_mask(config, n_codes)
    mask = activate(
        paths, candidate.mask, f"pipeline:{config.topic.key}", candidate.base_digest, over=candidate.weights
    )
    log.info(
        "mask %s now disables %d codes (%d sources)", mask.digest[:12], len(mask.code_ids), len(mask.sources)
    )
    return mask


def propose_mask(config: RunConfig, n_codes: int | None = None) -> Candidate:
    """Turn the selected codes into a mask and write its union with the active mask as the run's
    candidate (masks/candidate.json); the active mask is untouched until the candidate is activated."""
    paths = open_run(config)
    if not paths.selection_file.is_file():
        raise CodeunlearnError(f"no selected codes at {paths.selection_file}: run `codeunlearn mine` first")
    selection = json.loads(paths.selection_file.read_text())
    new = mask_from_codes(
        n_codes or config.bottleneck.n_codes,
        selection["topic"],
        selection["code_ids"],
        rule=selection["rule"],
        data_hash=selection["data_hash"],
        counts_run=selection["counts_run"],
        detector=TopicDetector.from_dict(selection["detector"]) if "detector" in selection else None,
    )
    if config.bottleneck.reads_detectors and new.sources[0].detector is None:
        raise CodeunlearnError(
            f"bottleneck.mask_condition={config.bottleneck.mask_condition}, but {paths.selection_file} "
            "holds no topic detector: run `codeunlearn mine` with mining.detector_recall > 0 first"
        )
    candidate = propose(paths, new)  # re-unlearning a topic replaces its earlier codes
    if config.bottleneck.reads_detectors:  # a candidate that fails here is never activated
        check_detectors(candidate.mask, config.bottleneck.mask_condition)
    return candidate


def forget_source(config: RunConfig, name: str) -> Mask:
    """Remove one source (topic or request) from the active mask: the deletion is undone."""
    paths = open_run(config)

    def remove(current: Mask | None) -> Mask:
        if current is None:
            raise CodeunlearnError(f"no active mask at {paths.active_mask}: nothing to remove")
        return current.without(name)

    return update_active(paths, remove, f"remove:{name}")
