"""`RunConfig`: every stage's section nested in one frozen dataclass, and the checks across sections."""

from __future__ import annotations

from dataclasses import dataclass

from codeunlearn.core.calibration_config import CalibrationConfig, SweepConfig
from codeunlearn.core.codebook_config import BottleneckConfig, TrainConfig
from codeunlearn.core.config_fields import section, setting
from codeunlearn.core.data_config import WORD_TOPIC_KINDS, DataConfig, ModelConfig, TopicConfig
from codeunlearn.core.errors import ConfigError
from codeunlearn.core.evaluation_config import EvalConfig, GatesConfig, TranslationConfig
from codeunlearn.core.tracking_config import RequestsConfig, TrackingConfig
from codeunlearn.core.unlearn_config import MiningConfig, UnlearnConfig


@dataclass(frozen=True)
class RunConfig:
    """Everything one run needs; the CLI, the flows and the tests build exactly this."""

    run_dir: str = setting("runs/default", "directory of the run's outputs: splits, model, masks, reports")
    seed: int = setting(0, "seed of the run's data splits and samples")
    offline: bool = setting(True, "never reach a model or dataset hub")
    model: ModelConfig = section(ModelConfig, "the pretrained causal LM to start from")
    data: DataConfig = section(DataConfig, "the corpus and its global train/test split")
    topic: TopicConfig = section(TopicConfig, "the deletion topic and the sizes of its sets")
    bottleneck: BottleneckConfig = section(BottleneckConfig, "the codebook bottleneck and where it sits")
    train: TrainConfig = section(TrainConfig, "codebook training")
    mining: MiningConfig = section(MiningConfig, "how the topic's codes are scored and selected")
    calibration: CalibrationConfig = section(
        CalibrationConfig, "how many codes each request's mask takes, chosen on its validation split"
    )
    unlearn: UnlearnConfig = section(
        UnlearnConfig, "how the unlearn stage answers: a mask or a gradient baseline"
    )
    eval: EvalConfig = section(
        EvalConfig, "evaluation of base, codebook, masked and random-mask models, and the knowledge probes"
    )
    translation: TranslationConfig = section(TranslationConfig, "the translation setting (translate-eval)")
    tracking: TrackingConfig = section(
        TrackingConfig, "where MLflow runs, registered models and requests live"
    )
    requests: RequestsConfig = section(RequestsConfig, "how failed deletion-request attempts are retried")
    gates: GatesConfig = section(GatesConfig, "what a mask version must clear to become production")
    sweep: SweepConfig = section(SweepConfig, "codeunlearn sweep: every label topic as its own request")

    def validate(self) -> None:
        """Checks that need no model; layer range is checked once the model is known."""
        kind = self.topic.kind
        self.data.validate()
        self.topic.validate()
        if self.mining.positions == "topic_words" and kind not in WORD_TOPIC_KINDS:
            raise ConfigError(
                f"mining.positions=topic_words needs a topic given as words (topic.keywords or "
                f"topic.regex), but this topic is a {kind}: use mining.positions=all"
            )
        if self.mining.positions == "topic_words" and self.topic.control not in ("auto", "swap"):
            raise ConfigError(
                f"mining.positions=topic_words counts the words a swap control put in place of the topic's, "
                f"but topic.control={self.topic.control} swaps none: use topic.control=swap (or auto), or "
                "mining.positions=all"
            )
        self.bottleneck.validate()
        if self.bottleneck.reads_detectors and not self.mining.detector_recall:
            raise ConfigError(
                f"bottleneck.mask_condition={self.bottleneck.mask_condition} masks what the topic's "
                "detector flags, but mining.detector_recall=0 fits none: set mining.detector_recall "
                "(e.g. 0.35 for prompt, 0.9 for text)"
            )
        self.train.validate()
        self.mining.validate(self.bottleneck.n_codes)
        self.unlearn.validate()
        self.eval.validate()
        self.translation.validate()
        self.tracking.validate()
        self.requests.validate()
        self.gates.validate()
        self.calibration.validate()
        self.sweep.validate()
        for n_select in self.eval.sweep:
            MiningConfig(n_select=n_select).validate(self.bottleneck.n_codes)
