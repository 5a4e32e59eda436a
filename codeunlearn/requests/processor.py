"""Answering deletion requests: mine each request's codes, add them to the active mask, evaluate,
register the masked model, promote it if it clears the gates, and record the outcome on the request.

Every step is safe to repeat: a run killed at any point leaves its request in `processing`, and the
next run (under the same lock) redoes it. The mask it computes has the same digest, so the masked
version registered by the killed run is found and reused rather than registered twice.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from functools import cached_property
from pathlib import Path

from codeunlearn.core.config import RunConfig, TopicConfig
from codeunlearn.core.errors import CodeunlearnError
from codeunlearn.core.failpoints import failpoint
from codeunlearn.core.paths import open_run
from codeunlearn.data.tables import read_table
from codeunlearn.data.topics import Splits, build_splits, write_splits
from codeunlearn.evaluation.calibrated import (
    calibrate_topic,
    held_out_pool,
    score_held_out,
    sized,
    test_of,
    texts_of,
    validation_of,
)
from codeunlearn.evaluation.evaluator import evaluation_rows
from codeunlearn.evaluation.outcome import TopicOutcome, random_control
from codeunlearn.evaluation.text_pool import TextPool
from codeunlearn.model import assets
from codeunlearn.model.loading import load_model
from codeunlearn.model.surgery import CodebookModel, weights_hash
from codeunlearn.pipeline.training_texts import validation_seen_texts
from codeunlearn.requests.answer import (
    NoPassingSize,
    calibration_fields,
    calibration_metrics,
    calibration_params,
    test_fields,
)
from codeunlearn.requests.forgotten import forgotten_topics
from codeunlearn.requests.lineage import promote_unless_carrying
from codeunlearn.requests.queue import (
    OPEN_STATUSES,
    DeletionRequest,
    RequestStore,
    failure_reason,
    topic_hash,
)
from codeunlearn.requests.registry import Registry
from codeunlearn.requests.revert import begin_revert, revert_attempt
from codeunlearn.unlearning.active_mask import activate, read_active
from codeunlearn.unlearning.calibration import Calibration
from codeunlearn.unlearning.masks import Mask, check_detectors, mask_rows
from codeunlearn.unlearning.recipe import MinedMask, detector_data, mine_mask, topic_batches, with_source

log = logging.getLogger(__name__)


class Processor:
    """Processes requests of one run directory against one registry; load models once, lazily."""

    def __init__(self, config: RunConfig, registry: Registry, parent_run_id: str | None = None) -> None:
        self.config = config
        self.registry = registry
        self.parent_run_id = parent_run_id  # the tracking run each request's run nests under
        self.paths = open_run(config)
        self.requests = RequestStore(self.paths.store_dir)

    # ------------------------------------------------------------ submission

    def submit(self, topic_config: TopicConfig, model_version: str = "") -> DeletionRequest:
        """Check a new request (its codebook version exists, its topic matches examples) and record it."""
        version = model_version or self.registry.latest_codebook_version()
        self.registry.codebook_tags(version)
        topic = replace(
            self.config.topic,
            **{k: getattr(topic_config, k) for k in ("label", "keywords", "regex", "examples_file")},
        )
        self._splits(topic)  # raises with the reason when the topic matches nothing
        request = self.requests.add(topic, self.registry.codebook_name, version)
        log.info(
            "recorded deletion request %s (%s topic) against codebook version %s",
            request.request_id,
            request.topic_kind,
            version,
        )
        return request

    # ------------------------------------------------------------ processing

    def process(self, request_id: str) -> DeletionRequest:
        """Answer one open request; the caller holds `self.requests.exclusive()`.

        Any error ends this attempt only, never the queue: the request's MLflow run ends FAILED and
        the error is recorded on it. A CodeunlearnError (bad input: a topic that matches nothing, an
        edited examples file) fails the request; any other error (I/O, the registry, out of memory)
        leaves it pending for a later run, after a backoff, until `requests.max_attempts` attempts
        have failed. A `reverting` request gets its revert finished (codeunlearn.requests.revert).
        """
        request = self.requests.get(request_id)
        if request.status not in OPEN_STATUSES:
            log.info("request %s is already %s", request_id, request.status)
            return request
        if request.status == "reverting":
            return revert_attempt(self, request)
        if request.attempts >= self.config.requests.max_attempts:  # each run that took it was killed
            reason = request.error or "each run that took it ended while processing it"
            return self.requests.mark(
                request, "failed", error=f"gave up after {request.attempts} attempts: {reason}"
            )
        request = self.requests.mark(request, "processing", attempts=request.attempts + 1)
        failpoint("after-claim")
        run_id = None
        try:
            run_id = self.registry.start_request_run(request, "unlearn", self.parent_run_id)
            return self._complete(request, run_id)
        except Exception as error:  # one request's failure, whatever it is, must not stop the others
            return self._end_attempt(request, run_id, error)

    def _complete(self, request: DeletionRequest, run_id: str) -> DeletionRequest:
        try:
            outcome, mask, version, calibration = self._answer(request, run_id)
        except NoPassingSize as rejection:  # nothing was registered, recorded or activated
            rejected = rejection.calibration
            metrics = {**calibration_metrics(rejected), "gates_passed": 0.0, "calibrated": 0.0}
            self.registry.finish_run(run_id, metrics, "FINISHED")
            log.info("request %s rejected: %s", request.request_id, rejection)
            return self.requests.mark(
                request, "rejected", error=f"calibration: {rejection}", **calibration_fields(rejected)
            )
        reasons = outcome.failures(self.config.gates)
        self._record_evaluation(request, mask, version, outcome, passed=not reasons)
        metrics = {**outcome.metrics(self.config.gates), **calibration_metrics(calibration)}
        metrics["gates_passed"] = float(not reasons)
        answer = {**calibration_fields(calibration), **test_fields(outcome)}
        if reasons:
            self.registry.finish_run(run_id, metrics, "FINISHED")
            log.info(
                "request %s: version %s not promoted: %s", request.request_id, version, "; ".join(reasons)
            )
            return self.requests.mark(
                request,
                "rejected",
                error="gates failed: " + "; ".join(reasons),
                mask_version=version,
                mask_digest=mask.digest,
                **answer,
            )
        self.activate(mask, version, f"request:{request.request_id}")
        failpoint("after-promote")
        # finished only now: a run killed before this is RUNNING, and the next holder ends it FAILED
        self.registry.finish_run(run_id, metrics, "FINISHED")
        log.info(
            "request %s done: mask version %s (%d codes) is production",
            request.request_id,
            version,
            len(mask.code_ids),
        )
        return self.requests.mark(
            request, "done", error="", mask_version=version, mask_digest=mask.digest, **answer
        )

    def _end_attempt(self, request: DeletionRequest, run_id: str | None, error: Exception) -> DeletionRequest:
        """Record why this attempt ended: the request fails (bad input, or the last attempt) or waits
        for the next run."""
        if run_id is not None:
            self.close_run(run_id)
        permanent = isinstance(error, CodeunlearnError)
        reason = failure_reason(error)
        retry = not permanent and request.attempts < self.config.requests.max_attempts
        log.warning(
            "request %s attempt %d failed (%s)%s; see `codeunlearn request show %s`",
            request.request_id,
            request.attempts,
            type(error).__name__,
            ", it stays pending for a later run" if retry else "",
            request.request_id,
            exc_info=not permanent,
        )
        if retry:
            return self.requests.retry_later(
                request, "pending", reason, self.config.requests.backoff_s(request.attempts)
            )
        if not permanent:
            reason = f"gave up after {request.attempts} attempts: {reason}"
        return self.requests.mark(request, "failed", error=reason)

    def close_run(self, run_id: str) -> None:
        """End an attempt's MLflow run as FAILED, if the registry answers (it may be what failed)."""
        try:
            self.registry.finish_run(run_id, {}, "FAILED")
        except Exception as closing:  # the request's own record is what must be written
            log.warning("could not close MLflow run %s: %s", run_id, closing)

    def revert(self, request_id: str) -> DeletionRequest:
        """Take one done request's codes out of the active mask, gated (codeunlearn.requests.revert);
        finishes a revert a killed run began."""
        return revert_attempt(self, begin_revert(self, request_id))

    def active_mask(self) -> Mask:
        return read_active(self.paths) or Mask(self.codebook_model.bottleneck.n_codes)

    # ------------------------------------------------------------ steps

    def _answer(
        self, request: DeletionRequest, run_id: str
    ) -> tuple[TopicOutcome, Mask, str, Calibration | None]:
        self._check_model(request)
        topic = request.topic(self.config.topic)
        if topic_hash(topic) != request.topic_hash:
            raise CodeunlearnError(
                f"the topic of {request.request_id} changed since it was submitted (its examples file was "
                "edited): submit a new request"
            )
        # the active mask's other topics are forgotten on purpose: their rows in the retain sets would
        # count that forgetting as this request's damage
        splits = self._splits(topic, self._forgotten(request.request_id))
        write_splits(splits, self.request_dir(request.request_id) / "topic")
        mined = self._mine(request, splits, topic)
        failpoint("after-mine")
        pool = self.pool(splits)
        own, calibration = self._calibrated(request, splits, mined, pool, run_id)
        mask = with_source(self.active_mask(), own)
        if self.config.bottleneck.reads_detectors:  # before anything is registered or saved
            check_detectors(mask, self.config.bottleneck.mask_condition)
        outcome = self._evaluate(pool, splits, mask, len(own.code_ids))
        version = self.registry.find_mask_version(mask.digest, request.request_id)
        if version is None:
            version = self.registry.register_mask(
                mask,
                request.model_version,
                request.request_id,
                {
                    "request_id": request.request_id,
                    "topic_hash": request.topic_hash,
                    "forget_data_hash": splits.manifest["splits"]["forget_train"]["content_hash"],
                    "control_data_hash": splits.manifest["splits"]["control_train"]["content_hash"],
                    **outcome.tags(self.config.gates),
                },
                run_id,
            )
            failpoint("after-register")
        self.record_mask(mask, version, request.model_version)
        return outcome, mask, version, calibration

    def _check_model(self, request: DeletionRequest) -> None:
        tags = self.registry.codebook_tags(request.model_version)
        expected = tags.get("weights_sha256")
        if expected and expected != self.local_weights_hash:
            raise CodeunlearnError(
                f"request {request.request_id} targets codebook version {request.model_version}, but "
                f"{self.paths.model_dir} holds other weights: process it from that version's run_dir"
            )

    @cached_property
    def local_weights_hash(self) -> str:
        return weights_hash(self.paths.model_dir)

    def _splits(self, topic: TopicConfig, forgotten: tuple[TopicConfig, ...] = ()) -> Splits:
        corpus = self.paths.corpus_dir
        train = read_table(corpus / "train.parquet")
        seen = validation_seen_texts(replace(self.config, topic=topic), train)
        return build_splits(
            train, read_table(corpus / "test.parquet"), topic, self.config.seed, forgotten, seen
        )

    def _forgotten(self, request_id: str) -> tuple[TopicConfig, ...]:
        names = [source.name for source in self.active_mask().sources]
        return forgotten_topics(self.requests, names, self.config.topic, request_id)

    def _mine(self, request: DeletionRequest, splits: Splits, topic: TopicConfig) -> MinedMask:
        config = replace(self.config, topic=topic)
        return mine_mask(
            self.codebook_model,
            request.request_id,
            topic_batches(
                config.mining, topic, config.data.max_length, splits, self.codebook_model.tokenizer
            ),
            config.mining,
            detector_data(config, splits=splits),
            on_counts=lambda split, counts: self.requests.store.replace_counts(
                request.request_id, split, request.request_id, counts
            ),
            data_hash=splits.manifest["splits"]["forget_train"]["content_hash"],
            counts_run=request.request_id,
        )

    def request_dir(self, request_id: str) -> Path:
        """Where a request's own files (its topic's splits) live."""
        return self.paths.root / "requests" / request_id

    def pool(self, splits: Splits) -> TextPool:
        """The request's validation and test texts, each scored once under base and codebook model."""
        pool = held_out_pool(
            self.codebook_model,
            self.base_model,
            self.config.data.max_length,
            self.config.eval.batch_size,
            self.config.train.mode,
        )
        texts = texts_of(splits)
        pool.add(list(texts), list(texts.values()))
        return pool

    def _calibrated(
        self, request: DeletionRequest, splits: Splits, mined: MinedMask, pool: TextPool, run_id: str
    ) -> tuple[Mask, Calibration | None]:
        """The request's own mask at the S' calibration chose on its validation split, and that
        calibration (the mined S' and None when calibration.grid is empty); raises NoPassingSize when
        no S' clears both gates there."""
        if not self.config.calibration.enabled:
            return mined.mask, None
        calibration = calibrate_topic(
            pool,
            validation_of(splits),
            mined.ranked,
            mined.mask.n_codes,
            self.config.calibration,
            self.config.gates,
            splits.forget_train.num_rows,
            self._active_besides(request.request_id),
            detector=mined.detector,
        )
        self.registry.log_dict(run_id, calibration.summary(), "calibration.json")
        self.registry.log_params(run_id, calibration_params(calibration))
        if not calibration.passed:
            raise NoPassingSize(calibration)
        log.info(
            "request %s: calibration chose S' = %d on validation (%d sizes scored)",
            request.request_id,
            calibration.chosen.n_select,
            len(calibration.frontier),
        )
        return sized(mined, calibration.chosen.n_select), calibration

    def _active_besides(self, request_id: str) -> Mask:
        """The active mask without the request's own codes, which a killed attempt may have activated:
        calibrating beside them could choose another S' and register a second version."""
        active = self.active_mask()
        if request_id in {source.name for source in active.sources}:
            return active.without(request_id)
        return active

    def _evaluate(self, pool: TextPool, splits: Splits, mask: Mask, n_random: int) -> TopicOutcome:
        """Base, codebook and masked NLL on the held-out test split, and the random control: `n_random`
        random codes (as many as the request chose) outside `mask`, alone on the codebook model."""
        control = random_control(mask, n_random, self.config.eval.random_seed)
        return TopicOutcome.from_nll(score_held_out(pool, test_of(splits), mask, control))

    def activate(self, mask: Mask, version: str, action: str) -> None:
        # active first: a crash between leaves production behind the active mask, and the request
        # still open, so the next run promotes the same version
        activate(self.paths, mask, action)
        promote_unless_carrying(self.registry, self.paths.store_dir, version, action.partition(":")[2])

    def record_mask(self, mask: Mask, version: str, codebook_version: str) -> None:
        # keyed by version: a replay after a crash replaces the rows rather than adding them again
        rows = mask_rows(mask, version, codebook_version)
        self.requests.store.append("mask_codes", rows, prefix="mask", key=f"v{version}")

    def _record_evaluation(
        self, request: DeletionRequest, mask: Mask, version: str, outcome: TopicOutcome, passed: bool
    ) -> None:
        nll = {
            v: {"forget": outcome.forget[v], "retain": outcome.retain[v]}
            for v in ("base", "codebook", "masked")
        }
        rows = evaluation_rows(
            f"{request.request_id}-v{version}", mask, version, request.model_version, nll, passed
        )
        self.requests.store.append("evaluations", rows, prefix=request.request_id, key=f"v{version}")

    # ------------------------------------------------------------ models

    @cached_property
    def codebook_model(self) -> CodebookModel:
        return load_model(self.config)

    @cached_property
    def base_model(self):
        model, _ = assets.load_pretrained(self.config.model.name, self.codebook_model.device.type)
        return model
