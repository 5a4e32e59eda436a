"""Initial codes for a codebook, drawn from real activations so training starts near the identity:
spherical k-means (the default) or a random sample of the activations.

Shapes: N samples, e code width, C codes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def kmeans_codes(samples: torch.Tensor, n_codes: int, iters: int, generator: torch.Generator) -> torch.Tensor:
    """Spherical k-means centroids of `samples` (N, e), returned at the samples' mean norm (C, e).

    Codes are chosen by cosine similarity, so clustering directions matches how they will be used.
    With fewer samples than codes, the missing codes are noisy copies of random samples.
    """
    samples = samples.float()
    units = F.normalize(samples, dim=-1)
    centroids = _kmeans_plus_plus(units, min(n_codes, units.shape[0]), generator)
    for _ in range(iters):
        assign = torch.cat([(chunk @ centroids.T).argmax(-1) for chunk in units.split(4096)])
        sums = torch.zeros_like(centroids).index_add_(0, assign, units)
        counts = torch.bincount(assign, minlength=centroids.shape[0])
        alive = counts > 0
        centroids[alive] = F.normalize(sums[alive], dim=-1)
    if centroids.shape[0] < n_codes:
        extra = units[torch.randint(units.shape[0], (n_codes - centroids.shape[0],), generator=generator)]
        noise = torch.randn(extra.shape, generator=generator) * 0.05
        centroids = torch.cat([centroids, F.normalize(extra + noise, dim=-1)])
    return centroids * samples.norm(dim=-1).mean()


def _kmeans_plus_plus(units: torch.Tensor, n_codes: int, generator: torch.Generator) -> torch.Tensor:
    """Seeds spread out by k-means++ (cosine distance): random seeds often share one cluster."""
    picks = [int(torch.randint(units.shape[0], (1,), generator=generator))]
    distance = 1 - units @ units[picks[0]]
    for _ in range(n_codes - 1):
        weights = distance.clamp_min(0)
        pick = int(
            torch.multinomial(
                weights if weights.sum() > 0 else torch.ones_like(weights), 1, generator=generator
            )
        )
        picks.append(pick)
        distance = torch.minimum(distance, 1 - units @ units[pick])
    return units[picks].clone()


def sample_codes(samples: torch.Tensor, n_codes: int, generator: torch.Generator) -> torch.Tensor:
    """`n_codes` rows of `samples` (N, e) drawn at random (with replacement if N < n_codes)."""
    replace = samples.shape[0] < n_codes
    picks = (
        torch.randint(samples.shape[0], (n_codes,), generator=generator)
        if replace
        else torch.randperm(samples.shape[0], generator=generator)[:n_codes]
    )
    return samples[picks].float().clone()
