"""The run's trained codebook model, loaded and served as the config says."""

from __future__ import annotations

from codeunlearn.core.config import BottleneckConfig, RunConfig
from codeunlearn.core.paths import open_run
from codeunlearn.model import assets
from codeunlearn.model.serving import ServingPolicy
from codeunlearn.model.surgery import CodebookModel, load_codebook_model


def load_model(config: RunConfig) -> CodebookModel:
    """The run's trained codebook model, searching codes and masking as `config.bottleneck` says: a
    model trained with exact search can be mined, evaluated and served with the grouped search, and
    back, and under either mask policy."""
    paths = open_run(config)
    codebook_model = load_codebook_model(paths.model_dir, assets.pick_device(config.model.device))
    return served_as_configured(codebook_model, config.bottleneck)


def served_as_configured(codebook_model: CodebookModel, bottleneck: BottleneckConfig) -> CodebookModel:
    """Apply the configured code search and mask policy, which training does not fix, to a model."""
    codebook_model.bottleneck.serve(ServingPolicy.of(bottleneck))
    return codebook_model
