"""Typed run configuration: one frozen dataclass per stage, nested in `RunConfig`.

YAML fills it (`load_config`), dotted overrides (`train.lr=3e-4`) change one field each, and every
value is checked against its field's type before any model loads. Every field carries a one-line doc
(`config_fields.setting`), which `codeunlearn config show` prints beside its value.

The sections live in modules by stage; this module gathers every public name, so callers import
from `codeunlearn.core.config` alone:

- `config_fields`: `setting`, `section`, `field_doc`, `field_docs`, `unknown_choice`,
  `REMOVED_SETTINGS`, `removed_in_effect`, `with_removed_defaults`
- `data_config`: `ModelConfig`, `DataConfig`, `TopicConfig`, `CONTROL_CHOICES`, `WORD_TOPIC_KINDS`
- `codebook_config`: `BottleneckConfig`, `TrainConfig`, `MASK_CONDITIONS`, `DETECTOR_CONDITIONS`,
  `default_search_groups`
- `unlearn_config`: `MiningConfig`, `BaselineConfig`, `UnlearnConfig`, `MASK_METHOD`, `GRADIENT_METHODS`
- `evaluation_config`: `EvalConfig`, `ProbeConfig`, `DefinitionConfig`, `GeneralTextConfig`,
  `TranslationConfig`, `GatesConfig`, `TRANSLATION_METRICS`, `DEBIAN_REFERENCE`
- `calibration_config`: `CalibrationConfig`, `SweepConfig`, `CALIBRATION_SEARCHES`
- `tracking_config`: `TrackingConfig`, `RequestsConfig`
- `run_config`: `RunConfig`
- `config_io`: `load_config`, `with_overrides`, `config_to_dict`, `save_config`, `flatten_config`,
  `commented_yaml`
"""

from __future__ import annotations

from codeunlearn.core.calibration_config import CALIBRATION_SEARCHES, CalibrationConfig, SweepConfig
from codeunlearn.core.codebook_config import (
    DETECTOR_CONDITIONS,
    MASK_CONDITIONS,
    BottleneckConfig,
    TrainConfig,
    default_search_groups,
)
from codeunlearn.core.config_fields import (
    REMOVED_SETTINGS,
    field_doc,
    field_docs,
    removed_in_effect,
    section,
    setting,
    unknown_choice,
    with_removed_defaults,
)
from codeunlearn.core.config_io import (
    commented_yaml,
    config_to_dict,
    flatten_config,
    load_config,
    save_config,
    with_overrides,
)
from codeunlearn.core.data_config import (
    CONTROL_CHOICES,
    WORD_TOPIC_KINDS,
    DataConfig,
    ModelConfig,
    TopicConfig,
)
from codeunlearn.core.errors import ConfigError
from codeunlearn.core.evaluation_config import (
    DEBIAN_REFERENCE,
    TRANSLATION_METRICS,
    DefinitionConfig,
    EvalConfig,
    GatesConfig,
    GeneralTextConfig,
    ProbeConfig,
    TranslationConfig,
)
from codeunlearn.core.run_config import RunConfig
from codeunlearn.core.tracking_config import RequestsConfig, TrackingConfig
from codeunlearn.core.unlearn_config import (
    GRADIENT_METHODS,
    MASK_METHOD,
    BaselineConfig,
    MiningConfig,
    UnlearnConfig,
)

__all__ = [
    "CALIBRATION_SEARCHES",
    "CalibrationConfig",
    "SweepConfig",
    "CONTROL_CHOICES",
    "DEBIAN_REFERENCE",
    "GRADIENT_METHODS",
    "DETECTOR_CONDITIONS",
    "MASK_CONDITIONS",
    "MASK_METHOD",
    "REMOVED_SETTINGS",
    "TRANSLATION_METRICS",
    "WORD_TOPIC_KINDS",
    "BaselineConfig",
    "BottleneckConfig",
    "ConfigError",
    "DataConfig",
    "DefinitionConfig",
    "EvalConfig",
    "GatesConfig",
    "GeneralTextConfig",
    "MiningConfig",
    "ModelConfig",
    "ProbeConfig",
    "RequestsConfig",
    "RunConfig",
    "TopicConfig",
    "TrackingConfig",
    "TrainConfig",
    "TranslationConfig",
    "UnlearnConfig",
    "commented_yaml",
    "config_to_dict",
    "default_search_groups",
    "field_doc",
    "field_docs",
    "flatten_config",
    "load_config",
    "removed_in_effect",
    "save_config",
    "section",
    "setting",
    "unknown_choice",
    "with_overrides",
    "with_removed_defaults",
]
