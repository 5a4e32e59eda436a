"""A tiny but real tracked setup: a random-weight Llama with the real SmolLM2 tokenizer saved as a
transformers directory, a WordNet-derived corpus file, and a config whose run directory and MLflow
state live under one temporary directory."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import yaml

LABELS = ("noun.food", "noun.animal", "noun.plant", "noun.artifact", "noun.person", "noun.location")
ROWS_PER_LABEL = 160


def write_tiny_model(directory: Path) -> Path:
    from transformers import AutoTokenizer

    from codeunlearn.model.assets import ensure_smollm2

    from ..conftest import make_tiny

    tokenizer = AutoTokenizer.from_pretrained(ensure_smollm2())
    model = make_tiny("llama", len(tokenizer), n_layers=3, width=64)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def write_corpus(path: Path, extra_rows: list[dict] | None = None) -> Path:
    """ROWS_PER_LABEL WordNet noun glosses of each of LABELS (real text, deterministic)."""
    from codeunlearn.data.wordnet import read_wordnet

    table = read_wordnet("/usr/share/wordnet", ("noun",), False)
    rows = []
    for label in LABELS:
        texts = [
            t
            for t, lab in zip(
                table.column("text").to_pylist(), table.column("label").to_pylist(), strict=True
            )
            if lab == label
        ]
        rows += [
            {"id": f"{label}-{i}", "text": text, "label": label}
            for i, text in enumerate(texts[:ROWS_PER_LABEL])
        ]
    rows += extra_rows or []
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def tiny_config(root: Path, model_dir: Path, corpus: Path, **sections: dict) -> dict:
    config = {
        "run_dir": str(root / "run"),
        "model": {"name": str(model_dir), "device": "cpu"},
        "data": {"corpus": str(corpus), "max_length": 32},
        "topic": {
            "label": "noun.food",
            "max_forget": 120,
            "max_control": 120,
            "max_retain": 120,
            "max_eval_forget": 30,
            "max_eval_retain_per_topic": 6,
        },
        "bottleneck": {"layer": 1, "n_codes": 64, "top_k": 4},
        "train": {
            "max_examples": 480,
            "batch_size": 16,
            "lr": 0.01,
            "base_lr": 0.003,
            "init_vectors": 1024,
            "kmeans_iters": 2,
            "reseed_every": 0,
            "checkpoint_every": 0,
        },
        "mining": {
            "n_select": 8,
            "min_count": 1,
            "max_p_value": 1.0,
            "min_enrichment": 1.0,
            "batch_size": 64,
        },
        "calibration": {"grid": [8]},  # one size: open gates take it, as mining.n_select did
        "eval": {"sweep": [4, 8], "batch_size": 64},
        "tracking": {"state_dir": str(root / "state")},
        "gates": {
            "min_forget_drop": -1.0e9,
            "max_retain_drop": 1.0e9,
            "max_random_share": 1.0e9,
            "min_gain": -1.0e9,
        },
    }
    for section, values in sections.items():
        config[section] = {**config.get(section, {}), **values}
    return config


def write_config(path: Path, config: dict) -> Path:
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path
