"""The deletion certificate: a JSON record binding a mask version to the exact model, data, evaluation
and attack results it was judged on, by content hashes anyone can recompute.

`build` reads only files of the run directory; `verify` recomputes every hash against a run directory
(or any copy of its files) and lists what no longer matches.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from codeunlearn.core.config import RunConfig
from codeunlearn.core.errors import CodeunlearnError
from codeunlearn.core.redaction import redact_uri
from codeunlearn.core.serialization import without_nan
from codeunlearn.data.corpus import content_hash
from codeunlearn.data.topics import SPLIT_NAMES
from codeunlearn.evaluation.outcome import TopicOutcome
from codeunlearn.model.surgery import weights_hash
from codeunlearn.unlearning.masks import Mask, load_mask

FORMAT = "codeunlearn-deletion-certificate/1"


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def build(
    config: RunConfig,
    evaluation: Mapping[str, Any],
    artifacts: Mapping[str, Path],
    results: Mapping[str, Any] | None = None,
    registry: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The certificate of the run's active mask.

    Args:
        config: the run.
        evaluation: eval/report.json of the active mask (its `mask_digest` must match).
        artifacts: name -> file of everything the report consists of (report.md, plots, JSON).
        results: further results to certify (relearning, membership inference, probe, collateral).
        registry: where the mask version lives (tracking URI, model names and versions).

    Raises:
        CodeunlearnError: no mask, or the evaluation is of another mask.
    """
    run_dir = Path(config.run_dir)
    mask_file = run_dir / "masks" / "active.json"
    if not mask_file.is_file():
        raise CodeunlearnError(f"no active mask in {run_dir}: run `codeunlearn run` first")
    mask = load_mask(mask_file)
    if evaluation.get("mask_digest") != mask.digest:
        raise CodeunlearnError(
            f"eval/report.json evaluates mask {str(evaluation.get('mask_digest'))[:12]}, but the active mask "
            f"is {mask.digest[:12]}: run `codeunlearn evaluate` first"
        )
    nll = evaluation["nll"]
    outcome = TopicOutcome.from_nll(nll)
    return without_nan(
        {
            "format": FORMAT,
            "created_at": datetime.now(UTC).isoformat(),
            "topic": {"key": config.topic.key, "kind": config.topic.kind},
            "model": _model_block(run_dir / "model", config.model.name),
            "mask": {
                **_mask_block(mask, mask_file),
                # the same codes forget differently under another policy or gate
                "policy": config.bottleneck.mask_policy,
                "gate": config.bottleneck.mask_gate,
                "context_gate": config.bottleneck.mask_context_gate,
                "context_after": config.bottleneck.mask_context_after,
                "condition": config.bottleneck.mask_condition,
                "detect_after": config.bottleneck.mask_detect_after,
                "detectors": {name: d.digest for name, d in sorted(mask.detectors.items())},
            },
            "data": _data_block(run_dir / "data" / "topic"),
            "evaluation": {
                "nll": {v: nll[v] for v in ("base", "codebook", "masked", "random") if v in nll},
                # the keys of the first format stay as they were; the raw figures came later
                "forget_drop": outcome.forget_drop,
                "retain_drop": outcome.retain_drop,
                "forget_nats": outcome.forget_nats,
                "retain_nats": outcome.retain_nats,
                "gain": outcome.gain,
                "learned": outcome.learned(config.gates.min_gain),
                "random_share": outcome.random_share,
                "gates": {
                    "min_forget_drop": config.gates.min_forget_drop,
                    "max_retain_drop": config.gates.max_retain_drop,
                    "max_random_share": config.gates.max_random_share,
                    "min_gain": config.gates.min_gain,
                    "failures": outcome.failures(config.gates),
                },
            },
            "results": dict(results or {}),
            "artifacts": {name: file_sha256(path) for name, path in sorted(artifacts.items())},
            "registry": _public_registry(registry or {}),
        }
    )


def verify(certificate: Mapping[str, Any], run_dir: Path, artifacts_dir: Path | None = None) -> list[str]:
    """What in `run_dir` (and the report artifacts under `artifacts_dir`) no longer matches the
    certificate; [] when everything does."""
    if certificate.get("format") != FORMAT:
        return [f"not a {FORMAT} certificate (format {certificate.get('format')!r})"]
    run_dir = Path(run_dir)
    problems = []
    model = _model_block_from(run_dir / "model", certificate["model"].get("base_name", ""))
    if model["weights_sha256"] != certificate["model"]["weights_sha256"]:
        problems.append("model weights differ from the certified codebook model")
    for name, expected in certificate["model"]["files"].items():
        if model["files"].get(name) != expected:
            problems.append(f"model file {name} differs or is missing")
    mask_file = run_dir / "masks" / "active.json"
    if not mask_file.is_file() or load_mask(mask_file).digest != certificate["mask"]["digest"]:
        problems.append("the active mask is not the certified mask")
    data = _data_block(run_dir / "data" / "topic")
    for split, entry in certificate["data"].items():
        if data.get(split, {}).get("content_hash") != entry["content_hash"]:
            problems.append(f"data split {split} differs from the certified one")
    if artifacts_dir is not None:
        for name, expected in certificate["artifacts"].items():
            path = Path(artifacts_dir) / name
            if not path.is_file() or file_sha256(path) != expected:
                problems.append(f"report artifact {name} differs or is missing")
    return problems


def write(certificate: Mapping[str, Any], path: Path) -> str:
    """Write the certificate; returns the sha256 of the written file (to tag the mask version with)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(certificate, indent=2, sort_keys=True) + "\n")
    return file_sha256(path)


def _model_block(model_dir: Path, base_name: str) -> dict[str, Any]:
    if not (model_dir / "codebook_config.json").is_file():
        raise CodeunlearnError(f"no trained codebook model in {model_dir}: run `codeunlearn train` first")
    return _model_block_from(model_dir, base_name)


def _model_block_from(model_dir: Path, base_name: str) -> dict[str, Any]:
    files = sorted(p for p in model_dir.rglob("*") if p.is_file() and p.suffix in (".safetensors", ".json"))
    return {
        "base_name": base_name,
        "weights_sha256": weights_hash(model_dir) if model_dir.is_dir() else "",
        "files": {str(p.relative_to(model_dir)): file_sha256(p) for p in files},
    }


def _mask_block(mask: Mask, mask_file: Path) -> dict[str, Any]:
    return {
        "digest": mask.digest,
        "codebook_size": mask.n_codes,
        "n_masked": len(mask.code_ids),
        "code_ids": list(mask.code_ids),
        "sources": [
            {"name": s.name, "rule": s.rule, "data_hash": s.data_hash, "n_codes": len(s.code_ids)}
            for s in mask.sources
        ],
    }


def _data_block(splits_dir: Path) -> dict[str, dict[str, Any]]:
    """Count and content hash (of the texts, in order) of every split file present."""
    block = {}
    for split in SPLIT_NAMES:
        path = splits_dir / f"{split}.parquet"
        if path.is_file():
            texts = pq.read_table(path, columns=["text"]).column("text").to_pylist()
            block[split] = {"count": len(texts), "content_hash": content_hash(texts)}
    return block


def _public_registry(registry: Mapping[str, str]) -> dict[str, str]:
    """The registry block with the credentials of its tracking URI replaced by `***`: a certificate is
    meant to be handed out."""
    return {key: redact_uri(value) if key == "tracking_uri" else value for key, value in registry.items()}
