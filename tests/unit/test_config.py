"""Config loading: typed overrides, unknown keys with suggestions, range checks before any model loads."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
import yaml

from codeunlearn.core import config_fields
from codeunlearn.core.config import (
    BottleneckConfig,
    DefinitionConfig,
    GeneralTextConfig,
    ProbeConfig,
    RunConfig,
    commented_yaml,
    config_to_dict,
    field_doc,
    field_docs,
    flatten_config,
    load_config,
    setting,
)
from codeunlearn.core.config_fields import nested_sections
from codeunlearn.core.errors import ConfigError

CONFIGS = Path(__file__).parents[2] / "configs"


def test_yaml_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  lr: 1e-3\n  mode: frozen\nbottleneck:\n  n_codes: 512\n")
    config = load_config(path, ["--train.lr=3e-4", "eval.sweep=[8, 16]", "topic.label=noun.animal"])
    assert config.train.lr == 3e-4 and config.train.mode == "frozen"
    assert config.bottleneck.n_codes == 512 and config.eval.sweep == (8, 16)
    assert config.topic.name == "noun.animal"
    assert flatten_config(config)["train.lr"] == 3e-4


def test_unknown_key_names_the_closest():
    with pytest.raises(
        ConfigError, match="unknown config key train.bach_size; did you mean train.batch_size"
    ):
        load_config(None, ["train.bach_size=1"])
    with pytest.raises(ConfigError, match="did you mean bottleneck"):
        load_config(None, ["botleneck.layer=1"])


def test_wrong_type_and_ranges():
    with pytest.raises(ConfigError, match="train.batch_size='big' is a str, but it must be a int"):
        load_config(None, ["train.batch_size=big"])
    with pytest.raises(ConfigError, match="top_k=9000, but bottleneck.n_codes=4096"):
        load_config(None, ["bottleneck.top_k=9000"])
    with pytest.raises(ConfigError, match="mining.n_select=5000, but the codebook has 4096 codes"):
        load_config(None, ["mining.n_select=5000"])
    with pytest.raises(ConfigError, match="exactly one of label, keywords"):
        load_config(None, ["topic.keywords=[love]", "topic.label=noun.food"])
    with pytest.raises(ConfigError, match=r"topic.max_val_retain=-3: set it to a whole number of 0 or more"):
        load_config(None, ["topic.max_val_retain=-3"])
    assert load_config(None, ["topic.max_val_forget=0"]).topic.max_val_forget == 0  # 0: no validation split


def test_word_topic_replaces_the_default_label(tmp_path):
    config = load_config(None, ["topic.keywords=[love, hate]"])
    assert config.topic.kind == "keywords" and config.topic.label is None
    path = tmp_path / "c.yaml"
    path.write_text("topic:\n  label: noun.food\n")
    assert load_config(path, ["--topic.regex=lov(e|ing)"]).topic.kind == "regex"


def test_defaults_validate():
    RunConfig().validate()


@pytest.mark.parametrize("name", ["default", "pursuit"])
def test_configs_that_spell_the_gates_out_keep_the_defaults(name: str):
    from codeunlearn.core.config import GatesConfig

    assert load_config(CONFIGS / f"{name}.yaml", []).gates == GatesConfig()


def test_a_model_trained_before_speed_settings_existed_still_matches():
    from dataclasses import replace

    from codeunlearn.training.stamp import same_training, training_stamp

    config = load_config(None, [])
    current = training_stamp(config)
    older = {
        **current,
        "bottleneck": {
            k: v
            for k, v in current["bottleneck"].items()
            if k not in ("chunk_codes", "coarse_candidates", "search", "search_groups", "search_probes")
        },
    }
    assert same_training(older, current)  # saved before those fields existed
    faster = training_stamp(replace(config, bottleneck=replace(config.bottleneck, chunk_tokens=512)))
    assert same_training(current, faster)  # chunking changes speed, not codes
    coarse = training_stamp(replace(config, bottleneck=replace(config.bottleneck, coarse_candidates=32)))
    assert not same_training(older, coarse)  # approximate ranking is another model
    grouped = training_stamp(replace(config, bottleneck=replace(config.bottleneck, search="grouped")))
    assert not same_training(older, grouped)
    other_k = training_stamp(replace(config, bottleneck=replace(config.bottleneck, top_k=4)))
    assert not same_training(current, other_k)
    zero = training_stamp(replace(config, bottleneck=replace(config.bottleneck, mask_policy="zero")))
    assert same_training(current, zero)  # training never sees a mask; the policy is applied at load
    gated = replace(config.bottleneck, mask_policy="zero", mask_gate=2)
    assert same_training(current, training_stamp(replace(config, bottleneck=gated)))
    in_context = replace(gated, mask_context_gate=1, mask_context_after=2)
    assert same_training(current, training_stamp(replace(config, bottleneck=in_context)))


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"mask_policy": "zero", "mask_gate": 0}, "mask_gate=0: use a count between 1"),
        ({"mask_policy": "zero", "mask_gate": 9}, "and top_k=8"),
        ({"mask_gate": 2}, "set bottleneck.mask_policy=zero, or bottleneck.mask_gate=1"),
        ({"mask_policy": "zero", "mask_context_gate": 1}, "mask_context_gate=1 with bottleneck.mask_gate=1"),
        ({"mask_policy": "zero", "mask_gate": 3, "mask_context_gate": 3}, "between 1 and 2"),
        ({"mask_policy": "zero", "mask_gate": 3, "mask_context_gate": -1}, "or 0 for none"),
        ({"mask_context_after": 0}, "mask_context_after=0: use 1 or more"),
    ],
)
def test_mask_gate_is_a_count_of_codes_under_the_zero_policy(settings, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        BottleneckConfig(top_k=8, **settings).validate()


def test_unlearn_method_is_checked_against_the_gradient_methods_at_load():
    with pytest.raises(
        ConfigError,
        match=re.escape(
            "unlearn.method='gaa' is not an unlearning method (did you mean ga?): use one of mask, ga, "
            "graddiff, npo, rmu"
        ),
    ):
        load_config(None, ["unlearn.method=gaa"])
    with pytest.raises(ConfigError, match=re.escape("unlearn.baseline.lr=0.0: set it above 0")):
        load_config(None, ["unlearn.method=npo", "unlearn.baseline.lr=0"])
    with pytest.raises(ConfigError, match="unlearn.method='ga' picks the method: set unlearn.method=rmu"):
        load_config(None, ["unlearn.method=ga", "unlearn.baseline.method=rmu"])
    with pytest.raises(ConfigError, match="unlearn.forget_limit=0: set it to 1 or more"):
        load_config(None, ["unlearn.forget_limit=0"])
    with pytest.raises(ConfigError, match="did you mean unlearn.baseline.epochs"):
        load_config(None, ["unlearn.baseline.epoch=2"])


def test_unlearn_defaults_to_masking_and_a_baseline_takes_its_settings():
    default = load_config(None, []).unlearn
    assert default.method == "mask" and not default.uses_gradients
    config = load_config(
        None, ["unlearn.method=rmu", "unlearn.baseline.epochs=2", "unlearn.baseline.rmu_layer=3"]
    )
    assert config.unlearn.uses_gradients
    gradient = config.unlearn.gradient_config
    assert (gradient.method, gradient.epochs, gradient.rmu_layer) == ("rmu", 2, 3)
    assert flatten_config(config)["unlearn.baseline.epochs"] == 2


def test_loading_a_config_imports_no_torch_even_for_a_gradient_method():
    import subprocess
    import sys

    code = (
        "import sys\nfrom codeunlearn.core.config import load_config\n"
        "load_config(None, ['unlearn.baseline.epochs=2'])\n"
        "load_config(None, ['unlearn.method=rmu'])\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'torch' or m.startswith('codeunlearn.')"
        " and not m.startswith('codeunlearn.core')))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"  # the config owns the method names: no registry, no torch


@pytest.mark.parametrize("name", ["default", "pursuit", "translation", "translation-fr"])
def test_every_shipped_run_config_loads_and_validates(name):
    config = load_config(Path(__file__).parents[2] / "configs" / f"{name}.yaml")
    assert config.run_dir


def test_pursuit_config_is_the_default_with_the_pursuit_bottleneck():
    configs = Path(__file__).parents[2] / "configs"
    default, pursuit = (flatten_config(load_config(configs / f"{n}.yaml")) for n in ("default", "pursuit"))
    changed = {key for key in default if default[key] != pursuit[key]}
    # both mask zero; the default gates at 2 of 8 codes, pursuit at 6 of 32 after 3 in context
    pursuit_settings = {"bottleneck." + key for key in ("top_k", "combine", "mask_gate", "mask_context_gate")}
    # pursuit keeps the library's calibration grid and no margin, as its results were measured
    calibration = {"calibration.grid", "calibration.forget_margin"}
    gated_selection = {"mining.n_select", "mining.min_enrichment", "mining.max_p_value"}
    prompt_condition = {"bottleneck.mask_condition", "mining.detector_recall"}
    assert changed == {
        "run_dir",
        "eval.run_reference",
        *pursuit_settings,
        *gated_selection,
        *prompt_condition,
        *calibration,
    }


def _sections(cls: type, prefix: str = "") -> list[tuple[str, type]]:
    """Every config section reachable from `cls`, by its dotted name."""
    found = [(prefix or "RunConfig", cls)]
    for name, section in nested_sections(cls).items():
        found += _sections(section, f"{prefix}{name}.")
    return found


def test_every_field_of_every_section_has_a_one_line_doc():
    sections = _sections(RunConfig)
    assert len(sections) == 19  # RunConfig, its 14 sections, unlearn.baseline and eval's three probes
    missing = [
        f"{prefix}{field.name}"
        for prefix, cls in sections
        for field in dataclasses.fields(cls)
        if not field_doc(field).strip() or "\n" in field_doc(field)
    ]
    assert missing == [], f"declare these with setting(default, doc) or section(cls, doc): {missing}"


def test_the_knowledge_probes_are_eval_sections_with_the_commands_defaults():
    config = load_config(None, [])
    assert dict(nested_sections(type(config.eval))) == {
        "probe": ProbeConfig,
        "definitions": DefinitionConfig,
        "general_text": GeneralTextConfig,
    }
    probe, definitions, general = config.eval.probe, config.eval.definitions, config.eval.general_text
    assert (probe.questions_per_topic, probe.forget_questions, probe.options, probe.seed) == (50, 200, 4, 0)
    assert (definitions.forget_lemmas, definitions.lemmas_per_topic, definitions.max_new_tokens) == (
        50,
        10,
        24,
    )
    assert (general.source, general.passages, general.max_length) == ("debian-reference", 100, 128)
    for section in (ProbeConfig, DefinitionConfig, GeneralTextConfig):
        assert all(doc.strip() for doc in field_docs(section).values()), section
    text = commented_yaml(config)
    assert (
        "  probe:" in text
        and "questions_per_topic: 50" in text
        and "# questions on the forgotten topic" in text
    )
    changed = load_config(None, ["eval.probe.questions_per_topic=7", "eval.definitions.seed=3"])
    assert changed.eval.probe.questions_per_topic == 7 and changed.eval.definitions.seed == 3


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("eval.probe.questions_per_topic=-1", "eval.probe.questions_per_topic=-1: set it to 1 or more"),
        ("eval.probe.forget_questions=0", "eval.probe.forget_questions=0: set it to 1 or more"),
        ("eval.probe.options=1", "eval.probe.options=1: use 2 or more"),
        (
            "eval.probe.same_topic_distractors=4",
            "eval.probe.same_topic_distractors=4: use 0 to 3, fewer than eval.probe.options=4",
        ),
        ("eval.definitions.max_new_tokens=0", "eval.definitions.max_new_tokens=0: set it to 1 or more"),
        ("eval.definitions.lemmas_per_topic=0", "eval.definitions.lemmas_per_topic=0: set it to 1 or more"),
        ("eval.general_text.max_length=1", "eval.general_text.max_length=1: set it to 2 or more"),
        ("eval.general_text.min_chars=-1", "eval.general_text.min_chars=-1: set it to 0 or more"),
        ("eval.general_text.source=nowhere.txt", "eval.general_text.source='nowhere.txt' is neither"),
        ("eval.probe.question_per_topic=5", "did you mean eval.probe.questions_per_topic"),
    ],
)
def test_a_probe_setting_out_of_range_is_refused_at_load(override, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(None, [override])


def test_a_field_declared_without_a_doc_has_none():
    @dataclasses.dataclass(frozen=True)
    class Section:
        documented: int = setting(1, "a number")
        bare: int = 2

    assert field_docs(Section) == {"documented": "a number", "bare": ""}
    assert Section().documented == 1 and Section.documented == 1  # a plain default, class attribute too


def test_commented_yaml_loads_back_to_the_same_config(tmp_path):
    config = load_config(
        CONFIGS / "translation.yaml", ["train.lr=3e-4", "unlearn.method=npo", "topic.keywords=[a, 'b: c']"]
    )
    text = commented_yaml(config)
    assert yaml.safe_load(text) == config_to_dict(config)
    assert "  lr: 0.0003  " in text and "# bottleneck learning rate" in text
    (tmp_path / "shown.yaml").write_text(text)
    assert load_config(tmp_path / "shown.yaml") == config


def test_a_file_that_is_not_yaml_is_refused_naming_the_line(tmp_path):
    (tmp_path / "bad.yaml").write_text("train:\n  lr: [1\n")
    with pytest.raises(ConfigError, match=r"bad.yaml is not valid YAML: .* at line 3"):
        load_config(tmp_path / "bad.yaml")


def test_every_name_callers_used_is_still_importable_from_core_config():
    import codeunlearn.core.config as config_module

    names = [
        "RunConfig",
        "ModelConfig",
        "DataConfig",
        "TopicConfig",
        "BottleneckConfig",
        "TrainConfig",
        "MiningConfig",
        "BaselineConfig",
        "UnlearnConfig",
        "EvalConfig",
        "TranslationConfig",
        "TrackingConfig",
        "GatesConfig",
        "ProbeConfig",
        "DefinitionConfig",
        "GeneralTextConfig",
        "load_config",
        "with_overrides",
        "config_to_dict",
        "save_config",
        "flatten_config",
        "default_search_groups",
        "unknown_choice",
        "CONTROL_CHOICES",
        "MASK_CONDITIONS",
        "WORD_TOPIC_KINDS",
        "MASK_METHOD",
        "ConfigError",
    ]
    assert [name for name in names if not hasattr(config_module, name)] == []
    assert set(config_module.__all__) <= set(dir(config_module))


def test_core_imports_nothing_of_the_package_outside_core():
    core = Path(config_fields.__file__).parent
    outside = {
        f"{path.name}: {module}"
        for path in core.glob("*.py")
        for module in re.findall(r"^\s*(?:from|import)\s+(codeunlearn\.\w+)", path.read_text(), re.M)
        if module != "codeunlearn.core"
    }
    assert outside == set()
