"""Initial codes for a codebook, drawn from real activations so training starts near the identity:
spherical k-means (the default) or a random sample of the activations.

The k-means runs in torch. Its time went to the k-means++ seeding, now drawn in blocks; against that,
faiss's Lloyd iterations saved about a second at the default job's sizes on a 2-core CPU: not worth a
dependency, nor codes that differ with whether it is installed (docs/results/faiss.md).

Shapes: N samples, e code width, C codes.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

_SEED_BLOCK = 256  # k-means++ seeds drawn between two refreshes of the distances


def kmeans_codes(samples: torch.Tensor, n_codes: int, iters: int, generator: torch.Generator) -> torch.Tensor:
    """Spherical k-means centroids of `samples` (N, e), returned at the samples' mean norm (C, e).

    Codes are chosen by cosine similarity, so clustering directions matches how they will be used.
    With fewer samples than codes, the missing codes are noisy copies of random samples.
    """
    samples = samples.float()
    units = F.normalize(samples, dim=-1)
    centroids = spherical_kmeans(units, min(n_codes, units.shape[0]), iters, generator)
    if centroids.shape[0] < n_codes:
        extra = units[torch.randint(units.shape[0], (n_codes - centroids.shape[0],), generator=generator)]
        noise = torch.randn(extra.shape, generator=generator) * 0.05
        centroids = torch.cat([centroids, F.normalize(extra + noise, dim=-1)])
    return centroids * samples.norm(dim=-1).mean()


def spherical_kmeans(
    units: torch.Tensor,
    n_centroids: int,
    iters: int,
    generator: torch.Generator,
    seeds: torch.Tensor | None = None,
) -> torch.Tensor:
    """Lloyd iterations on unit vectors (N, e), N >= C, from `seeds` (C, e) or k-means++ seeds: (C, e) unit.

    A centroid no vector is nearest to stays where it was.
    """
    centroids = kmeans_plus_plus(units, n_centroids, generator) if seeds is None else seeds.clone()
    for _ in range(iters):
        assign = torch.cat([(chunk @ centroids.T).argmax(-1) for chunk in units.split(4096)])
        sums = torch.zeros_like(centroids).index_add_(0, assign, units)
        counts = torch.bincount(assign, minlength=centroids.shape[0])
        alive = counts > 0
        centroids[alive] = F.normalize(sums[alive], dim=-1)
    return centroids


def kmeans_plus_plus(units: torch.Tensor, n_centroids: int, generator: torch.Generator) -> torch.Tensor:
    """k-means++ seeds (C, e) of unit vectors (N, e), by cosine distance: random seeds often share a cluster.

    Each seed is drawn with probability proportional to its distance to the nearest seed so far, as in
    k-means++, but distances are refreshed once per block of seeds, by one matrix product: a candidate
    drawn from the block's stale distances is kept with probability new distance / stale distance,
    which draws exactly from the current ones (rejection sampling; distances only shrink). One
    matrix-vector product per seed instead reads all N vectors C times: at N = 12,288, C = 4,096
    that took 14-30 s on a shared 2-core CPU, the blocks 0.3-1.7 s.
    """
    picks = torch.randint(units.shape[0], (1,), generator=generator).tolist()
    nearest = units @ units[picks[0]]  # (N,) cosine to the nearest seed so far
    while len(picks) < n_centroids:
        # small blocks while few seeds exist, as each new seed then changes the distances the most
        block_size = min(_SEED_BLOCK, len(picks), n_centroids - len(picks))
        block = _draw_seed_block(units, (1 - nearest).clamp_min(0), block_size, generator)
        if block:
            picks += block
            nearest = torch.maximum(nearest, (units @ units[block].T).max(-1).values)
    return units[picks].clone()


def _draw_seed_block(
    units: torch.Tensor, distance: torch.Tensor, block_size: int, generator: torch.Generator
) -> list[int]:
    """Up to `block_size` seed rows drawn by k-means++ from `distance` (N,), updated within the block."""
    total = float(distance.sum())
    if total <= 0:  # every vector is a seed already: repeat random ones
        return torch.randint(units.shape[0], (block_size,), generator=generator).tolist()
    draws = 2 * block_size
    candidates = torch.searchsorted(distance.cumsum(0), torch.rand(draws, generator=generator) * total)
    candidates = candidates.clamp_max(units.shape[0] - 1)
    thresholds = torch.rand(draws, generator=generator).tolist()
    stale = distance[candidates].tolist()
    # the candidates' similarities, in one product: the loop below then runs no threaded kernel, which
    # on a busy CPU waits for a second core at every call
    similarity = (units[candidates] @ units[candidates].T).cpu().numpy()  # (draws, draws)
    nearest = np.full(draws, -np.inf, dtype=similarity.dtype)  # cosine to the block's seeds so far
    block: list[int] = []
    for row, candidate in enumerate(candidates.tolist()):
        if thresholds[row] * stale[row] < min(stale[row], 1 - nearest[row]):
            block.append(candidate)
            if len(block) == block_size:
                break
            np.maximum(nearest, similarity[row], out=nearest)
    return block


def sample_codes(samples: torch.Tensor, n_codes: int, generator: torch.Generator) -> torch.Tensor:
    """`n_codes` rows of `samples` (N, e) drawn at random (with replacement if N < n_codes)."""
    replace = samples.shape[0] < n_codes
    picks = (
        torch.randint(samples.shape[0], (n_codes,), generator=generator)
        if replace
        else torch.randperm(samples.shape[0], generator=generator)[:n_codes]
    )
    return samples[picks].float().clone()
