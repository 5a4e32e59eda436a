"""Where a codebook starts: its codes drawn from real activations at the bottleneck layer (k-means or a
sample, codeunlearn.model.code_init), so training starts near the identity; with code routes, each
label's reserved codes from its own texts."""

from __future__ import annotations

import logging

import torch

from codeunlearn.core.config import ConfigError, TrainConfig
from codeunlearn.data.batching import Batch
from codeunlearn.model.code_init import kmeans_codes, sample_codes
from codeunlearn.model.surgery import CodebookModel
from codeunlearn.training.code_routes import TextRoutes

log = logging.getLogger(__name__)


def content_mask(hidden: torch.Tensor, batch: Batch) -> torch.Tensor:
    """(B, T) True where the bottleneck sees a real token, position 0 (BOS) excluded."""
    valid = batch.attention_mask.bool().to(hidden.device).clone()
    valid[:, 0] = False
    return valid


def content_vectors(hidden: torch.Tensor, batch: Batch) -> torch.Tensor:
    """The (N, d) vectors the bottleneck really sees: real tokens, position 0 (BOS) excluded."""
    return hidden[content_mask(hidden, batch)]


@torch.no_grad()
def init_codes(
    codebook_model: CodebookModel,
    activations: list[torch.Tensor],
    batches: list[Batch],
    config: TrainConfig,
    routes: TextRoutes | None = None,
) -> None:
    """Start the codes from real activations (k-means or a sample) so training starts near the identity;
    with `routes`, each label's reserved codes from its own texts' activations."""
    bottleneck = codebook_model.bottleneck
    generator = torch.Generator().manual_seed(config.seed)
    samples = torch.cat([content_vectors(h, b) for h, b in zip(activations, batches, strict=True)])
    picks = torch.randperm(len(samples), generator=generator)[: config.init_vectors]
    samples = samples[picks].cpu()
    if routes is not None:
        _init_routed_codes(codebook_model, activations, batches, config, routes, generator)
        shared = torch.arange(routes.routes.n_reserved, bottleneck.n_codes)
        _reset_unit_codes(codebook_model, shared, _initial_codes(samples, len(shared), config, generator))
        log.info(
            "initialised %d shared codes by %s from %d activations", len(shared), config.init, len(samples)
        )
        return
    if len(samples) < 2 * bottleneck.n_codes:
        # The unclustered codes start as copies of single activations; measured at C = 16,384 on
        # the default job, 12,288 activations left the codebook 0.09 nats worse than 49,152.
        log.warning(
            "initialising %d codes from only %d activations: set train.init_vectors=%d or more "
            "(and train on enough examples to supply them) so that k-means can form clusters",
            bottleneck.n_codes,
            len(samples),
            3 * bottleneck.n_codes,
        )
    codes = _initial_codes(samples, bottleneck.n_codes, config, generator)
    _reset_unit_codes(codebook_model, torch.arange(bottleneck.n_codes), codes)
    log.info("initialised %d codes by %s from %d activations", bottleneck.n_codes, config.init, len(samples))


def _init_routed_codes(
    codebook_model: CodebookModel,
    activations: list[torch.Tensor],
    batches: list[Batch],
    config: TrainConfig,
    routes: TextRoutes,
    generator: torch.Generator,
) -> None:
    """Each routed label's reserved codes from its own texts' activations (k-means or a sample)."""
    by_route: dict[int, list[torch.Tensor]] = {}
    for hidden, batch in zip(activations, batches, strict=True):
        valid = content_mask(hidden, batch)
        for row, route in enumerate(routes.route_ids[batch.rows].tolist()):
            by_route.setdefault(route, []).append(hidden[row][valid[row]].cpu())
    for index, label in enumerate(routes.routes.labels):
        samples = torch.cat(by_route.get(index) or [torch.zeros(0, codebook_model.bottleneck.hidden_dim)])
        if not len(samples):
            raise ConfigError(
                f"train.route_codes: label {label!r} has no training text: raise train.max_examples or "
                "train.route_min_examples"
            )
        reserved = torch.tensor(list(routes.routes.reserved(label)))
        _reset_unit_codes(codebook_model, reserved, _initial_codes(samples, len(reserved), config, generator))
    log.info(
        "reserved %d codes for each of %d labels, initialised from their own texts",
        routes.routes.per_label,
        len(routes.routes.labels),
    )


def _initial_codes(
    samples: torch.Tensor, n_codes: int, config: TrainConfig, generator: torch.Generator
) -> torch.Tensor:
    if config.init == "kmeans":
        return kmeans_codes(samples, n_codes, config.kmeans_iters, generator)
    return sample_codes(samples, n_codes, generator)


def _reset_unit_codes(codebook_model: CodebookModel, code_ids: torch.Tensor, codes: torch.Tensor) -> None:
    bottleneck = codebook_model.bottleneck
    if bottleneck.config.rescale == "input_norm":
        # Output norm comes from the input, so only directions matter; unit codes also make the
        # optimizer's step size mean the same thing whatever the activations' scale (~250 here).
        codes = torch.nn.functional.normalize(codes, dim=-1)
    bottleneck.reset_codes(code_ids.to(codebook_model.device), codes.to(codebook_model.device))
