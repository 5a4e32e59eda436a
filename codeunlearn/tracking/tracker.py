"""MLflow tracking and registry (with tracking/pyfunc.py, the only code that imports MLflow).

One experiment per base model; each stage a run nested under its pipeline run; every trained codebook
a version of `<name>-<run>-codebook`; every mask a version of `<name>-<run>-masked` (`<run>`: the run
directory's id) that carries only the mask and points at its codebook version, so a deletion adds
kilobytes to the registry, not a model copy.

Privacy: parameters, tags and artifacts carry topic kinds, hashes and counts, never the text of a
forget set or the words of a keyword topic (see `public_params`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import mlflow
from mlflow.entities import Metric, Param, RunStatus
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from codeunlearn.core.config import RunConfig, flatten_config
from codeunlearn.core.errors import CodeunlearnError
from codeunlearn.core.failpoints import failpoint
from codeunlearn.core.redaction import redact_uri
from codeunlearn.requests.queue import DeletionRequest
from codeunlearn.tracking.pyfunc import CodebookPyfunc
from codeunlearn.unlearning.masks import Mask, save_mask

log = logging.getLogger(__name__)

PRODUCTION = "production"
LOCKED_TAG = "codeunlearn.locked_run_dir"  # on runs made under a run directory's processing lock
SECRET_TOPIC_KEYS = ("topic.keywords", "topic.regex", "topic.examples_file")
URI_KEYS = ("tracking.tracking_uri", "tracking.artifact_root")  # may carry credentials
PIP_REQUIREMENTS = ["codeunlearn", "torch", "transformers", "safetensors"]
# Prompts in, generated continuations out; `max_new_tokens` may be set per call.
_SIGNATURE = mlflow.models.infer_signature(["a prompt"], ["a continuation"], params={"max_new_tokens": 32})


def public_params(config: RunConfig) -> dict[str, str]:
    """The config as flat parameters: the topic's words, pattern and file hashed, URI credentials `***`."""
    params = {}
    for key, value in flatten_config(config).items():
        if key in SECRET_TOPIC_KEYS and value:
            value = "sha256:" + hashlib.sha256(json.dumps(value).encode()).hexdigest()[:16]
        params[key] = (redact_uri(str(value)) if key in URI_KEYS else str(value))[:500]
    return params


def registry_name(model_name: str) -> str:
    """A registry-safe name from a model alias, path or hub id."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", Path(model_name).name or model_name).strip("-") or "model"


def run_dir_id(run_dir: str | Path) -> str:
    """A short stable id of the resolved run directory: each run directory has its own active mask,
    so its registered models (and their `production` alias) are its own too."""
    return hashlib.sha256(str(Path(run_dir).resolve()).encode()).hexdigest()[:8]


def registered_prefix(config: RunConfig) -> str:
    """The prefix of the run's registered model names: tracking.model_name, or the base model's name
    and the run directory's id (two run directories over one base model never share `production`)."""
    return config.tracking.model_name or f"{registry_name(config.model.name)}-{run_dir_id(config.run_dir)}"


class Tracker:
    """Runs, artifacts and registered versions for one config's tracking settings.

    Every call names its run id explicitly, so Prefect tasks in other threads log to the right run.
    """

    def __init__(self, config: RunConfig) -> None:
        self.config = config
        settings = config.tracking
        Path(settings.state_dir).mkdir(parents=True, exist_ok=True)
        self.uri = settings.resolved_tracking_uri()
        self.client = MlflowClient(tracking_uri=self.uri)
        prefix = registered_prefix(config)
        self.codebook_name = f"{prefix}-codebook"
        self.masked_name = f"{prefix}-masked"
        self.experiment_name = settings.experiment or f"codeunlearn-{registry_name(config.model.name)}"
        self.experiment_id = self._experiment()

    def _experiment(self) -> str:
        found = self.client.get_experiment_by_name(self.experiment_name)
        if found is not None:
            return found.experiment_id
        try:
            return self.client.create_experiment(
                self.experiment_name, artifact_location=self.config.tracking.resolved_artifact_root()
            )
        except MlflowException:  # another process created it first
            return self.client.get_experiment_by_name(self.experiment_name).experiment_id

    # ------------------------------------------------------------ runs

    def start_run(
        self,
        name: str,
        parent_run_id: str | None = None,
        params: dict[str, str] | None = None,
        locked: bool = False,
    ) -> str:
        """A new RUNNING run; `locked`: its process holds the run directory's processing lock, so
        `close_abandoned_runs` may end it once that process is gone."""
        tags = {"mlflow.runName": name, "codeunlearn.stage": name}
        if parent_run_id:
            tags["mlflow.parentRunId"] = parent_run_id
        if locked:
            tags[LOCKED_TAG] = run_dir_id(self.config.run_dir)
        run = self.client.create_run(self.experiment_id, tags=tags, run_name=name)
        if params:
            self.log_params(run.info.run_id, params)
        return run.info.run_id

    @contextmanager
    def run(
        self, name: str, parent_run_id: str | None = None, log_config: bool = True, locked: bool = False
    ) -> Iterator[str]:
        """A run that ends FINISHED, or FAILED if the block raises (see `start_run` for `locked`)."""
        params = public_params(self.config) if log_config else None
        run_id = self.start_run(name, parent_run_id, params, locked)
        try:
            yield run_id
        except BaseException:
            self.client.set_terminated(run_id, RunStatus.to_string(RunStatus.FAILED))
            raise
        self.client.set_terminated(run_id, RunStatus.to_string(RunStatus.FINISHED))

    def finish_run(self, run_id: str, metrics: dict[str, float], status: str) -> None:
        self.log_metrics(run_id, metrics)
        self.client.set_terminated(run_id, status)

    def close_abandoned_runs(self) -> list[str]:
        """End as FAILED this run directory's locked runs still RUNNING, and return their ids.

        Call it holding the processing lock: whoever started those runs held the lock too and is gone
        (killed mid-attempt), or it would still hold it.
        """
        found = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.`{LOCKED_TAG}` = '{run_dir_id(self.config.run_dir)}' "
            "and attributes.status = 'RUNNING'",
        )
        for run in found:
            self.client.set_tag(run.info.run_id, "codeunlearn.ended_by", "the next holder of the lock")
            self.client.set_terminated(run.info.run_id, RunStatus.to_string(RunStatus.FAILED))
        if found:
            log.info("ended %d run(s) a killed processor left RUNNING as FAILED", len(found))
        return [run.info.run_id for run in found]

    def log_params(self, run_id: str, params: dict[str, Any]) -> None:
        entries = [Param(key, str(value)[:500]) for key, value in params.items()]
        for start in range(0, len(entries), 100):  # MLflow takes at most 100 params per batch
            self.client.log_batch(run_id, params=entries[start : start + 100])

    def log_metrics(self, run_id: str, metrics: dict[str, float], step: int = 0) -> None:
        for key, value in metrics.items():
            if value == value:  # NaN metrics (nothing to drop from) are left out, not logged as NaN
                self.client.log_metric(run_id, _metric_key(key), float(value), step=step)

    def log_history(self, run_id: str, history: list[dict[str, float]]) -> None:
        """Per-step training metrics (rows with a `step` key) in batches of one request each."""
        now = int(time.time() * 1000)
        metrics = [
            Metric(_metric_key(key), float(value), now, int(row["step"]))
            for row in history
            for key, value in row.items()
            if key != "step" and value == value
        ]
        for start in range(0, len(metrics), 1000):
            self.client.log_batch(run_id, metrics=metrics[start : start + 1000])

    def log_dict(self, run_id: str, payload: dict, artifact_file: str) -> None:
        self.client.log_dict(run_id, payload, artifact_file)

    def log_file(self, run_id: str, path: Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(run_id, str(path), artifact_path)

    def log_figure(self, run_id: str, figure: Any, artifact_file: str) -> None:
        self.client.log_figure(run_id, figure, artifact_file)

    # ------------------------------------------------------------ registry

    def register_codebook(self, run_id: str, model_dir: Path, tags: dict[str, str]) -> str:
        """Register the saved codebook model; the same weights (by hash) reuse their version."""
        existing = self._find(self.codebook_name, {"weights_sha256": tags["weights_sha256"]})
        if existing:
            return existing
        with mlflow_run(self.uri, run_id):
            info = mlflow.pyfunc.log_model(
                name="codebook",
                python_model=CodebookPyfunc(),
                artifacts={"codebook": str(model_dir)},
                signature=_SIGNATURE,
                pip_requirements=PIP_REQUIREMENTS,
            )
            return self._register(self.codebook_name, info.model_uri, tags)

    def latest_codebook_version(self) -> str:
        versions = self._versions(self.codebook_name)
        if not versions:
            raise CodeunlearnError(
                f"no registered codebook model {self.codebook_name!r} in {redact_uri(self.uri)}: "
                "run the pipeline once (`codeunlearn pipeline` or the pipeline deployment)"
            )
        return str(max(int(v.version) for v in versions))

    def codebook_tags(self, version: str) -> dict[str, str]:
        try:
            return dict(self.client.get_model_version(self.codebook_name, str(version)).tags)
        except MlflowException:
            known = ", ".join(sorted((str(v.version) for v in self._versions(self.codebook_name)), key=int))
            raise CodeunlearnError(
                f"codebook model {self.codebook_name!r} has no version {version!r} "
                f"(versions: {known or 'none'}); pass one of them with --model-version"
            ) from None

    def register_mask(
        self, mask: Mask, codebook_version: str, request_key: str, tags: dict[str, str], run_id: str
    ) -> str:
        """Register `mask` as a masked-model version over codebook `codebook_version`.

        `request_key` names what the version answers (a request id, `revert:<id>`, `pipeline:<topic>`);
        with the mask digest it finds the version again after a crash (`find_mask_version`).
        """
        with tempfile.TemporaryDirectory() as scratch, mlflow_run(self.uri, run_id):
            mask_path = Path(scratch) / "mask.json"
            save_mask(mask, mask_path)
            info = mlflow.pyfunc.log_model(
                name="masked",
                python_model=CodebookPyfunc(),
                artifacts={"mask": str(mask_path)},
                model_config={
                    "codebook_uri": f"models:/{self.codebook_name}/{codebook_version}",
                    **self.mask_serving(),
                },
                signature=_SIGNATURE,
                pip_requirements=PIP_REQUIREMENTS,
            )
            failpoint("before-register")  # a logged model with no version: the replay logs another
            return self._register(
                self.masked_name,
                info.model_uri,
                {
                    **tags,
                    "parent_codebook_version": str(codebook_version),
                    "mask_digest": mask.digest,
                    "n_codes": str(len(mask.code_ids)),
                    "request_ids": ",".join(s.name for s in mask.sources if s.name.startswith("req-")),
                    "sources": ",".join(s.name for s in mask.sources if not s.name.startswith("req-")),
                    "data_hashes": ",".join(s.data_hash[:16] for s in mask.sources),
                    "request_key": request_key,
                    **{key: str(value) for key, value in self.mask_serving().items()},
                },
            )

    def mask_serving(self) -> dict[str, str | int]:
        """How a mask is applied (the configured policy and gate): a masked version is served, and was
        evaluated, under these, which the codebook version's own saved settings need not match."""
        bottleneck = self.config.bottleneck
        return {
            "mask_policy": bottleneck.mask_policy,
            "mask_gate": bottleneck.mask_gate,
            "mask_context_gate": bottleneck.mask_context_gate,
            "mask_context_after": bottleneck.mask_context_after,
            "mask_condition": bottleneck.mask_condition,
            "mask_detect_after": bottleneck.mask_detect_after,
        }

    def find_mask_version(self, digest: str | None, request_key: str) -> str | None:
        """The version that answers `request_key` with the mask `digest` (None: with any mask)."""
        tags = {"request_key": request_key} | ({"mask_digest": digest} if digest else {})
        return self._find(self.masked_name, tags)

    def latest_mask_version(self, digest: str) -> str | None:
        """The newest masked-model version that holds the mask with `digest`."""
        found = [
            int(v.version) for v in self._versions(self.masked_name) if v.tags.get("mask_digest") == digest
        ]
        return str(max(found)) if found else None

    def mask_version_tags(self, version: str) -> dict[str, str]:
        return dict(self.client.get_model_version(self.masked_name, str(version)).tags)

    def tag_mask_version(self, version: str, tags: dict[str, str]) -> None:
        self._tag_version(self.masked_name, version, tags)

    def log_directory(self, run_id: str, directory: Path, artifact_path: str) -> None:
        self.client.log_artifacts(run_id, str(directory), artifact_path)

    def promote(self, version: str) -> None:
        self.client.set_registered_model_alias(self.masked_name, PRODUCTION, str(version))

    def production_version(self) -> str | None:
        try:
            return str(self.client.get_model_version_by_alias(self.masked_name, PRODUCTION).version)
        except MlflowException:
            return None

    def production_digest(self) -> str | None:
        """The mask digest of the `production` version (None: no version is production)."""
        version = self.production_version()
        return self.mask_version_tags(version).get("mask_digest") if version else None

    def start_request_run(
        self, request: DeletionRequest, action: str, parent_run_id: str | None = None
    ) -> str:
        return self.start_run(
            f"{action} {request.request_id}",
            parent_run_id,
            params={
                "request_id": request.request_id,
                "topic_kind": request.topic_kind,
                "topic_hash": request.topic_hash,
                "codebook_version": request.model_version,
                "action": action,
            },
            locked=True,
        )

    def _tag_version(self, name: str, version: str, tags: dict[str, str]) -> None:
        for key, value in tags.items():
            self.client.set_model_version_tag(name, version, key, str(value))

    def _register(self, name: str, model_uri: str, tags: dict[str, str]) -> str:
        """A new version of `name` from a logged model, created with its tags in one transaction: a
        crash leaves either no version or one that `_find` finds by its tags."""
        version = mlflow.register_model(model_uri, name, tags={k: str(v) for k, v in tags.items()})
        return str(version.version)

    def _versions(self, name: str) -> list:
        # An error here propagates: read as "no versions", it would register a duplicate.
        return list(self.client.search_model_versions(f"name = '{name}'"))

    def _find(self, name: str, tags: dict[str, str]) -> str | None:
        for version in self._versions(name):
            if all(version.tags.get(k) == v for k, v in tags.items()):
                return str(version.version)
        return None


@contextmanager
def mlflow_run(uri: str, run_id: str) -> Iterator[None]:
    """Make `run_id` the active run of this thread (model logging needs one), leaving it running."""
    mlflow.set_tracking_uri(uri)
    with mlflow.start_run(run_id=run_id, log_system_metrics=False):
        yield
    MlflowClient(uri).update_run(run_id, status="RUNNING")


def _metric_key(key: str) -> str:
    return re.sub(r"[^A-Za-z0-9_\-. /]", "_", key)
