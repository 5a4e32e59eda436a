"""Config sections for forgetting: how topic codes are mined, and how the unlearn stage answers.

The gradient baselines' names are owned here (`GRADIENT_METHODS`), so a config is checked without
importing torch or the baselines; the registry in codeunlearn.baselines.registry holds exactly these.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from codeunlearn.core.config_fields import section, setting, unknown_choice
from codeunlearn.core.errors import ConfigError

# `unlearn.method` for the default: mask the mined codes, no gradient steps.
MASK_METHOD = "mask"
# Every gradient baseline codeunlearn.baselines.registry can run, sorted; a test checks they agree.
GRADIENT_METHODS: tuple[str, ...] = ("ga", "graddiff", "npo", "rmu")


@dataclass(frozen=True)
class MiningConfig:
    """How topic codes are scored and selected."""

    rule: str = setting(
        "enrichment", "selection rule, a name in codeunlearn.unlearning.selection.SELECTION_RULES"
    )
    n_select: int = setting(192, "S': codes to mask (the top S'); 0 means all codes past the thresholds")
    min_count: int = setting(5, "token firings on the forget set below which a code is never selected")
    max_p_value: float = setting(1e-3, "the largest chi-squared p-value a selected code may have")
    min_enrichment: float = setting(
        2.0, "the smallest forget-over-control firing-rate ratio a selected code may have"
    )
    batch_size: int = setting(32, "texts per batch while counting code firings")
    # "topic_words": for a keyword/regex topic with its word-swap control, only the topic words in D_T
    # and the words that replaced them in the control (codeunlearn.data.positions)
    positions: str = setting("all", "where firings count: all content tokens, or topic_words")
    # The detector (unlearning/topic_detector.py) gets its threshold where it flags this share of the
    # topic's training prompts in cross-validation. 0.35 on configs/pursuit.yaml: `codeunlearn probe`
    # noun.food halfway to chance, every other topic within 2 points
    # (docs/results/prompt-conditioned-masking.md)
    detector_recall: float = setting(
        0.0, ">0: also fit the topic's prompt detector at this recall (mask_condition=prompt needs it)"
    )
    detector_negatives: int = setting(20000, "other texts at most the detector is fitted against")

    def validate(self, n_codes: int | None = None) -> None:
        if not 0 <= self.detector_recall <= 1:
            raise ConfigError(
                f"mining.detector_recall={self.detector_recall}: use a share in (0, 1], or 0 for no detector"
            )
        if self.detector_negatives < 1:
            raise ConfigError(f"mining.detector_negatives={self.detector_negatives}: set it to 1 or more")
        if self.positions not in ("all", "topic_words"):
            raise ConfigError(f"mining.positions={self.positions!r}: use 'all' or 'topic_words'")
        if self.n_select < 0:
            raise ConfigError(f"mining.n_select={self.n_select}: use 0 (threshold) or a positive count")
        if n_codes is not None and self.n_select > n_codes:
            raise ConfigError(
                f"mining.n_select={self.n_select}, but the codebook has {n_codes} codes: "
                f"set S' at most {n_codes} (--mining.n_select)"
            )


@dataclass(frozen=True)
class BaselineConfig:
    """One gradient unlearning run. Defaults follow the NPO paper's TOFU budget (10 epochs, lr 1e-5).

    It lives here, not in codeunlearn.baselines, so that `RunConfig` can nest it (`unlearn.baseline`)
    without importing torch.
    """

    method: str = setting(
        "npo", "ga, graddiff, npo or rmu; in a RunConfig unlearn.method picks it and this is not read"
    )
    lr: float = setting(1e-5, "AdamW learning rate of ga, graddiff and npo")
    epochs: int = setting(10, "passes over the forget batches; one optimizer step per forget batch")
    batch_size: int = setting(8, "examples per batch, for whoever builds the batches with make_batches")
    beta: float = setting(0.1, "NPO inverse temperature")
    retain_coef: float = setting(1.0, "weight of the retain NLL (GradDiff; NPO+RT); 0 makes NPO plain NPO")
    max_grad_norm: float = setting(1.0, "gradient clipping norm; GA's loss is unbounded below")
    weight_decay: float = setting(0.01, "AdamW weight decay")
    seed: int = setting(0, "seed of the forget batches' order per epoch (and RMU's random direction)")
    # RMU has its own loop: the paper's Zephyr-7B settings, but the steering norm is a multiple of the
    # measured activation norm (codeunlearn.baselines.rmu says why).
    rmu_layer: int | None = setting(
        None, "RMU's layer; null: a quarter of the way up (layer 7 of SmolLM2's 30)"
    )
    rmu_steering: float = setting(
        16.0, "RMU target norm over the layer's mean norm (tuned: docs/results/baselines.md)"
    )
    rmu_alpha: float = setting(1200.0, "RMU weight of the retain activations' MSE")
    rmu_lr: float = setting(5e-5, "RMU learning rate (lr is the other baselines')")

    def validate(self, section: str = "baseline") -> None:
        """Check the method against GRADIENT_METHODS, then every setting.

        Args:
            section: The dotted name errors call this config by (`unlearn.baseline` in a RunConfig).

        Raises:
            ConfigError: an unknown method, or a setting out of range.
        """
        if self.method not in GRADIENT_METHODS:
            raise ConfigError(
                f"{section}.method={self.method!r}: use one of {', '.join(GRADIENT_METHODS)} "
                f"(YAML or --{section}.method)"
            )
        self.validate_settings(section)

    def validate_settings(self, section: str = "baseline") -> None:
        """Check every setting but the method.

        Raises:
            ConfigError: a setting out of range, naming it and the bound.
        """
        if self.rmu_layer is not None and self.rmu_layer < 0:
            raise ConfigError(f"{section}.rmu_layer={self.rmu_layer}: give a decoder layer index, 0 or more")
        numbers = ("lr", "epochs", "batch_size", "beta", "max_grad_norm", "retain_coef", "weight_decay")
        for name in (*numbers, "rmu_steering", "rmu_alpha", "rmu_lr"):
            value, may_be_zero = getattr(self, name), name in ("retain_coef", "weight_decay")
            if not (value >= 0 if may_be_zero else value > 0):
                bound = "to 0 or more" if may_be_zero else "above 0"
                raise ConfigError(f"{section}.{name}={value}: set it {bound} (YAML or --{section}.{name})")


@dataclass(frozen=True)
class UnlearnConfig:
    """How the unlearn stage answers the request.

    `mask` (the default) masks the mined codes: no gradient steps. A gradient baseline (ga, graddiff,
    npo, rmu) runs in its place: it fine-tunes a copy of the trained codebook model on the forget subset
    and retain texts `codeunlearn compare` gives the baselines, and saves it under
    `<run_dir>/unlearned/<method>/`; the active mask is left alone.
    """

    method: str = setting(
        MASK_METHOD, "mask (mask the mined codes) or a gradient baseline: ga, graddiff, npo, rmu"
    )
    forget_limit: int = setting(
        200, "forget examples a baseline trains on (trained-on first); 4x as many retain"
    )
    # Its own `method` is not read: unlearn.method picks the method.
    baseline: BaselineConfig = section(BaselineConfig, "the gradient baseline's settings")

    @property
    def uses_gradients(self) -> bool:
        """Whether the stage fine-tunes weights (a baseline) rather than masking codes."""
        return self.method != MASK_METHOD

    @property
    def gradient_config(self) -> BaselineConfig:
        """The baseline's settings with `method` taken from unlearn.method."""
        return dataclasses.replace(self.baseline, method=self.method)

    def validate(self) -> None:
        """Check the method against `mask` and GRADIENT_METHODS, and the baseline's settings.

        Raises:
            ConfigError: an unknown method (listing the valid ones), a forget_limit below 1, a
                baseline.method that disagrees with unlearn.method, or a baseline setting out of range.
        """
        if self.forget_limit < 1:
            raise ConfigError(f"unlearn.forget_limit={self.forget_limit}: set it to 1 or more")
        if not self.uses_gradients:
            self.baseline.validate_settings("unlearn.baseline")
            return
        valid = [MASK_METHOD, *GRADIENT_METHODS]
        if self.method not in valid:
            raise unknown_choice("unlearn.method", self.method, valid, "an unlearning method")
        if self.baseline.method not in (BaselineConfig.method, self.method):
            raise ConfigError(
                f"unlearn.baseline.method={self.baseline.method!r}, but unlearn.method={self.method!r} picks "
                f"the method: set unlearn.method={self.baseline.method} instead, and leave "
                "unlearn.baseline.method out"
            )
        self.gradient_config.validate("unlearn.baseline")
