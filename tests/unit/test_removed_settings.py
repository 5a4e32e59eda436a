"""Removed settings: a config naming one is refused with the reason; saved models, training stamps and
sweep keys made while they existed are still read where they held what the code does now."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from codeunlearn.core.config import (
    REMOVED_SETTINGS,
    BottleneckConfig,
    MiningConfig,
    RunConfig,
    load_config,
)
from codeunlearn.core.config_fields import nested_sections
from codeunlearn.core.errors import CodeunlearnError, ConfigError
from codeunlearn.model.surgery import insert_bottleneck, load_codebook_model, save_codebook_model
from codeunlearn.pipeline.sweep import settings_key
from codeunlearn.training.stamp import same_training, training_stamp

# What a section saved before the removal held: every removed setting at its old default.
OLD_DEFAULTS = {
    section: {key: removed.default for key, removed in removed_keys.items()}
    for section, removed_keys in REMOVED_SETTINGS.items()
}


def test_removed_settings_are_no_longer_fields_of_their_sections():
    sections = nested_sections(RunConfig)
    for section, removed_keys in REMOVED_SETTINGS.items():
        fields = {f.name for f in dataclasses.fields(sections[section])}
        assert not fields & set(removed_keys), section
        for removed in removed_keys.values():
            assert not removed.needs or removed.needs in removed_keys


@pytest.mark.parametrize(
    "override", ["mining.rank_past_p_value=true", "bottleneck.use_sae=false", "bottleneck.l1_coef=0.01"]
)
def test_an_override_naming_a_removed_setting_is_refused_with_the_reason(override):
    key = override.partition("=")[0]
    with pytest.raises(ConfigError, match=rf"{key} was removed \(.+\): delete it from the config"):
        load_config(None, [override])


def test_a_config_file_naming_a_removed_setting_is_refused(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("bottleneck:\n  n_codes: 512\n  use_sae: false\n")
    with pytest.raises(ConfigError, match="bottleneck.use_sae was removed .*no measurement showed it helps"):
        load_config(path)


def _stamp_before_removal(**bottleneck: object) -> dict:
    current = training_stamp(RunConfig())
    return {**current, "bottleneck": {**current["bottleneck"], **OLD_DEFAULTS["bottleneck"], **bottleneck}}


def test_a_model_trained_before_the_removal_is_still_reused():
    current = training_stamp(RunConfig())
    assert set(OLD_DEFAULTS["bottleneck"]) == {"use_sae", "sae_dim", "l1_coef"}
    assert same_training(_stamp_before_removal(), current)
    # without the SAE, its width and L1 weight did nothing
    assert same_training(_stamp_before_removal(sae_dim=48, l1_coef=0.01), current)
    assert not same_training(_stamp_before_removal(use_sae=True), current)
    assert not same_training(_stamp_before_removal(use_sae=True, sae_dim=48), current)
    # a setting that still exists is still compared
    assert not same_training(_stamp_before_removal(top_k=3), current)


def test_a_sweep_made_before_the_removal_keeps_its_key():
    def with_old_fields(cls: type) -> type:
        removed = REMOVED_SETTINGS["mining" if cls is MiningConfig else "bottleneck"]
        fields = [(key, type(r.default), dataclasses.field(default=r.default)) for key, r in removed.items()]
        return dataclasses.make_dataclass(f"Old{cls.__name__}", fields, bases=(cls,), frozen=True)

    config = RunConfig()
    old = dataclasses.replace(
        config, mining=with_old_fields(MiningConfig)(), bottleneck=with_old_fields(BottleneckConfig)()
    )
    assert "use_sae" in dataclasses.asdict(old.bottleneck)
    assert settings_key(old, "codebook") == settings_key(config, "codebook")


def _saved_with(directory, tiny_llama, tokenizer, **bottleneck: object) -> None:
    codebook_model = insert_bottleneck(
        tiny_llama, tokenizer, BottleneckConfig(layer=0, n_codes=16, top_k=3), "t"
    )
    save_codebook_model(codebook_model, directory)
    meta_path = directory / "codebook_config.json"
    meta = json.loads(meta_path.read_text())
    meta["bottleneck"].update(bottleneck)
    meta_path.write_text(json.dumps(meta))


def test_a_model_saved_before_the_removal_loads(tiny_llama, tokenizer, tmp_path):
    _saved_with(tmp_path / "model", tiny_llama, tokenizer, **{**OLD_DEFAULTS["bottleneck"], "l1_coef": 0.01})
    loaded = load_codebook_model(tmp_path / "model")
    assert loaded.bottleneck.config == BottleneckConfig(layer=0, n_codes=16, top_k=3)
    ids = torch.tensor([[1, 5, 9, 12]])
    with torch.no_grad():
        assert torch.isfinite(loaded.model(input_ids=ids).logits).all()


def test_a_saved_sae_model_is_refused_with_what_to_do(tiny_llama, tokenizer, tmp_path):
    _saved_with(tmp_path / "model", tiny_llama, tokenizer, use_sae=True, sae_dim=48, l1_coef=1e-3)
    with pytest.raises(
        CodeunlearnError, match=r"bottleneck.use_sae=True, bottleneck.sae_dim=48, which was removed"
    ):
        load_codebook_model(tmp_path / "model")
