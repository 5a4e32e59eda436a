"""The no-bottleneck reference: the base model fine-tuned on the same data and budget as the codebook
model, the natural comparison for what the bottleneck costs.

Its held-out NLL depends on the base model, the training texts and settings, the layer (which
decides the trained layers in mode `above`) and the evaluation texts, not on the codebook. So it is
cached keyed on exactly those: an `evaluate` that changes only the bottleneck, the mask or the sweep
does not fine-tune it again, and runs that share a cache file (`eval.reference_cache`) reuse each
other's reference wherever the key matches.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, replace
from pathlib import Path

import torch

from codeunlearn.core.config import RunConfig, TrainConfig
from codeunlearn.data.tables import batch_texts
from codeunlearn.evaluation.evaluator import EvalSet, Evaluator
from codeunlearn.model import assets
from codeunlearn.model.surgery import insert_bottleneck, remove_bottleneck
from codeunlearn.training.trainer import train

log = logging.getLogger(__name__)

CACHE_FILE = "reference_nll.json"


def train_reference(config: RunConfig, texts: list[str]) -> torch.nn.Module:
    """The base model fine-tuned on `texts` with the codebook's training settings, no bottleneck."""
    device = assets.pick_device(config.model.device)
    model, tokenizer = assets.load_pretrained(config.model.name, device)
    # The bottleneck is inserted and bypassed so that mode `above` trains the same layers as it does
    # for the codebook model.
    codebook_model = insert_bottleneck(model, tokenizer, config.bottleneck, config.model.name)
    batches = batch_texts(texts, tokenizer, config.data.max_length, config.train.batch_size)
    train(codebook_model, batches, _reference_training(config.train), use_bottleneck=False)
    return remove_bottleneck(codebook_model)


# Training settings the reference's fine-tune never reads: the bottleneck's own (its learning rate,
# loss weight, initialisation and re-seeding), those that change speed or bookkeeping only, and the
# general-text mixture, which the key holds as the training texts it gives.
_NOT_IN_REFERENCE = frozenset(
    {"lr", "recon_coef", "init", "init_vectors", "kmeans_iters", "reseed_every"}
    | {"checkpoint_every", "compile"}
    | {"general_text", "general_fraction"}
)


def _reference_training(train: TrainConfig) -> TrainConfig:
    """The codebook's training settings; mode `frozen` (nothing but the bottleneck learns) becomes
    `above`, so that the reference is fine-tuned at all."""
    return train if train.mode != "frozen" else replace(train, mode="above")


def reference_key(config: RunConfig, texts: list[str], eval_sets: list[EvalSet]) -> str:
    """What the reference's held-out NLL depends on, hashed."""
    train_settings = {
        k: v for k, v in asdict(_reference_training(config.train)).items() if k not in _NOT_IN_REFERENCE
    }
    evaluated = [
        (
            s.name,
            s.groups,
            None if s.score_from is None else s.score_from.tolist(),
            [b.input_ids[b.attention_mask.bool()].tolist() for b in s.batches],
            # only when there are some, so that keys made before subsets existed still match
            *([{name: rows.tolist() for name, rows in s.subsets.items()}] if s.subsets else []),
        )
        for s in eval_sets
    ]
    payload = [
        config.model.name,
        train_settings,
        config.bottleneck.layer,
        config.data.max_length,
        texts,
        evaluated,
    ]
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=list).encode()).hexdigest()


def reference_nll(
    config: RunConfig, evaluator: Evaluator, texts: list[str], eval_dir: Path
) -> dict[str, float]:
    """The reference's NLL per evaluated split, from the cache when its key is there.

    The cache is `config.eval.reference_cache`, else `eval_dir`/reference_nll.json. It holds one entry
    per key, so runs sharing a file (an ablation's variants) fine-tune each distinct reference once.
    """
    key = reference_key(config, texts, evaluator.eval_sets)
    path = Path(config.eval.reference_cache) if config.eval.reference_cache else eval_dir / CACHE_FILE
    entries = _read_cache(path)
    if key in entries:
        log.info("reusing the no-bottleneck reference's NLL from %s", path)
        return entries[key]
    nll = evaluator.score_model(train_reference(config, texts))
    entries = {**_read_cache(path), key: nll}  # read again: another run may have added an entry
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    partial.write_text(json.dumps({"entries": entries}, indent=1))
    partial.replace(path)
    return nll


def _read_cache(path: Path) -> dict[str, dict[str, float]]:
    if not path.is_file():
        return {}
    cached = json.loads(path.read_text())
    if "key" in cached:  # the one-entry layout written before caches could be shared
        return {cached["key"]: cached["nll"]}
    return cached.get("entries", {})
