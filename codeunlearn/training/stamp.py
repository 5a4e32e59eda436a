"""The training stamp: the settings a trained codebook model was made with, saved beside it, so a
run reuses a trained model exactly when training it again would give the same model."""

from __future__ import annotations

import json
from dataclasses import asdict

from codeunlearn.core.config import REMOVED_SETTINGS, RunConfig, removed_in_effect
from codeunlearn.core.paths import run_paths

STAMP_FILE = "training_config.json"


def trained_model_matches(config: RunConfig) -> bool:
    """Whether run_dir holds a model trained with this config's model, data, bottleneck and training."""
    stamp = run_paths(config).model_dir / STAMP_FILE
    stored = json.loads(stamp.read_text()) if stamp.is_file() else None
    return stored is not None and same_training(stored, training_stamp(config))


# Settings that do not change what training produces: speed knobs, the mask policy and gate (training never
# runs with a mask; `load_model` applies the configured policy), and the translation setting's
# decoding and scoring. And settings added after models were first saved, compared only when set
# away from the value they had before they existed; settings removed since (REMOVED_SETTINGS) are
# compared only where a stamp holds them in effect, which the current config cannot match.
_TRAINING_NEUTRAL = {
    "bottleneck": (
        "chunk_tokens",
        "chunk_codes",
        "mask_policy",
        "mask_gate",
        "mask_context_gate",
        "mask_context_after",
        "mask_condition",
        "mask_detect_after",
    ),
    "train": ("compile",),
    "translation": ("metrics", "target_keywords", "max_new_tokens", "max_eval_examples", "wordnet_synonyms"),
}
_ADDED_LATER = {
    "bottleneck": {"coarse_candidates": 0, "search": "exact", "search_groups": 0, "search_probes": 8},
    "train": {
        "general_text": "",
        "general_fraction": 0.25,
        "precision": "auto",
        "exclude_labels": [],
        "route_codes": 0,
        "route_min_examples": 150,
        "route_coef": 0.1,
        "route_margin": 0.0,
    },
    "translation": {"whole_targets": False},
}


def same_training(stored: dict, current: dict) -> bool:
    """Whether two training stamps describe the same trained model."""

    def comparable(stamp: dict) -> dict:
        sections = {}
        for section in {*_TRAINING_NEUTRAL, *REMOVED_SETTINGS}:
            values = stamp.get(section, {})
            added = _ADDED_LATER.get(section, {})
            inert = set(REMOVED_SETTINGS.get(section, {})) - set(removed_in_effect(section, values))
            sections[section] = {
                k: v
                for k, v in values.items()
                if k not in _TRAINING_NEUTRAL.get(section, ())
                and not (k in added and v == added[k])
                and k not in inert
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
