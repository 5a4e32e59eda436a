"""Initial codes for a codebook, drawn from real activations so training starts near the identity:
spherical k-means (the default) or a random sample of the activations.

The k-means starts from k-means++ seeds, then runs its Lloyd iterations in faiss when it is installed
(1.4x faster than torch on a 2-core CPU, and it refills empty clusters; docs/results/faiss.md) and in
torch otherwise: the GPU image has no faiss.

Shapes: N samples, e code width, C codes.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)
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
    units: torch.Tensor, n_centroids: int, iters: int, generator: torch.Generator
) -> torch.Tensor:
    """Unit centroids (C, e) of unit vectors (N, e), N >= C: k-means++ seeds, then Lloyd iterations
    by faiss when installed, else by torch."""
    seeds = kmeans_plus_plus(units, n_centroids, generator)
    try:
        import faiss  # noqa: F401  deferred and optional: the GPU image has no faiss
    except ImportError:
        log.info("k-means of %d vectors into %d codes: torch (no faiss)", len(units), n_centroids)
        return torch_spherical_kmeans(units, n_centroids, iters, generator, seeds=seeds)
    log.info("k-means of %d vectors into %d codes: faiss", len(units), n_centroids)
    return faiss_spherical_kmeans(units, n_centroids, iters, generator, seeds=seeds)


def faiss_spherical_kmeans(
    units: torch.Tensor,
    n_centroids: int,
    iters: int,
    generator: torch.Generator,
    seeds: torch.Tensor | None = None,
) -> torch.Tensor:
    """faiss's Lloyd iterations on unit vectors (N, e) from `seeds` (C, e) or k-means++ seeds: (C, e) unit.

    faiss refills a cluster left empty by splitting a large one. It runs on torch's thread count.
    """
    import faiss  # deferred: an optional dependency, absent from the GPU image

    faiss.omp_set_num_threads(torch.get_num_threads())
    kmeans = faiss.Kmeans(
        units.shape[1],
        n_centroids,
        niter=iters,
        spherical=True,
        min_points_per_centroid=1,  # fewer than faiss's 39 per centroid is the usual case here
        max_points_per_centroid=units.shape[0],  # cluster every vector: no subsampling
    )
    seeds = kmeans_plus_plus(units, n_centroids, generator) if seeds is None else seeds
    kmeans.train(units.float().contiguous().numpy(), init_centroids=seeds.float().contiguous().numpy())
    return F.normalize(torch.from_numpy(kmeans.centroids).clone(), dim=-1)


def torch_spherical_kmeans(
    units: torch.Tensor,
    n_centroids: int,
    iters: int,
    generator: torch.Generator,
    seeds: torch.Tensor | None = None,
) -> torch.Tensor:
    """Lloyd iterations on unit vectors (N, e) from `seeds` (C, e) or k-means++ seeds: (C, e) unit.

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
    that took 25 s on 2 cores, the blocks 1.6 s.
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
    thresholds = torch.rand(draws, generator=generator)
    block: list[int] = []
    chosen = units.new_empty(block_size, units.shape[1])  # the block's seeds, rows 0..len(block)
    for candidate, threshold, stale in zip(
        candidates.tolist(), thresholds.tolist(), distance[candidates].tolist(), strict=True
    ):
        fresh = min(stale, 1 - float((chosen[: len(block)] @ units[candidate]).max())) if block else stale
        if threshold * stale < fresh:
            chosen[len(block)] = units[candidate]
            block.append(candidate)
            if len(block) == block_size:
                break
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
