"""The codebook's initial codes: spherical k-means (k-means++ seeds, then Lloyd) and sampled activations."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from codeunlearn.model.code_init import kmeans_codes, kmeans_plus_plus, sample_codes, spherical_kmeans


def separated_clusters(n_per_cluster: int = 50, width: int = 16, scale: float = 10.0) -> torch.Tensor:
    """Four tight clusters around orthogonal directions (rows 0-3 of the identity), norms about `scale`."""
    generator = torch.Generator().manual_seed(0)
    centers = torch.eye(4, width) * scale
    return torch.cat([c + torch.randn(n_per_cluster, width, generator=generator) * 0.1 for c in centers])


def pointing_at_each_center(codes: torch.Tensor, width: int = 16) -> bool:
    similarity = F.normalize(codes, dim=-1) @ torch.eye(4, width).T
    return bool(similarity.max(0).values.min() > 0.99)


def test_kmeans_codes_find_separated_clusters():
    codes = kmeans_codes(separated_clusters(), 4, iters=10, generator=torch.Generator().manual_seed(0))
    assert pointing_at_each_center(codes)  # every cluster has a code pointing at it


def test_spherical_kmeans_finds_separated_clusters_whatever_the_seed():
    units = F.normalize(separated_clusters(), dim=-1)
    for seed in range(20):  # k-means++ seeds land one per cluster (faiss's random seeds: 1 in 5 fail)
        centroids = spherical_kmeans(units, 4, 10, torch.Generator().manual_seed(seed))
        assert centroids.shape == (4, 16)
        assert torch.allclose(centroids.norm(dim=-1), torch.ones(4), atol=1e-5)
        assert pointing_at_each_center(centroids)


def test_kmeans_codes_are_reproducible_from_the_generator():
    units = F.normalize(torch.randn(600, 24, generator=torch.Generator().manual_seed(1)), dim=-1)
    first = kmeans_codes(units, 32, 5, torch.Generator().manual_seed(3))
    again = kmeans_codes(units, 32, 5, torch.Generator().manual_seed(3))
    other = kmeans_codes(units, 32, 5, torch.Generator().manual_seed(4))
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


def test_codes_come_back_at_the_samples_mean_norm():
    samples = separated_clusters() * torch.linspace(0.5, 2.0, 200)[:, None]
    codes = kmeans_codes(samples, 8, iters=3, generator=torch.Generator().manual_seed(0))
    assert codes.shape == (8, 16)
    assert torch.allclose(codes.norm(dim=-1), samples.norm(dim=-1).mean().expand(8), rtol=1e-5)


def test_fewer_samples_than_codes_fill_the_rest_with_noisy_copies():
    samples = separated_clusters(n_per_cluster=3)  # 12 samples, 20 codes
    codes = kmeans_codes(samples, 20, iters=3, generator=torch.Generator().manual_seed(0))
    assert codes.shape == (20, 16)
    assert torch.isfinite(codes).all()
    # the 8 extra codes each sit near one of the samples' directions
    nearest = (F.normalize(codes[12:], dim=-1) @ F.normalize(samples, dim=-1).T).max(-1).values
    assert (nearest > 0.95).all()


def test_sample_codes_are_rows_of_the_samples():
    samples = torch.randn(50, 8)
    codes = sample_codes(samples, 10, torch.Generator().manual_seed(0))
    assert all((samples == code).all(-1).any() for code in codes)


def exact_seed_set_probabilities(units: torch.Tensor, n_seeds: int) -> dict[frozenset, float]:
    """The distribution of k-means++ seed sets, by enumerating every order of picks."""
    found: dict[frozenset, float] = {}

    def extend(picks: list[int], probability: float) -> None:
        if len(picks) == n_seeds:
            key = frozenset(picks)
            found[key] = found.get(key, 0.0) + probability
            return
        distance = (1 - (units @ units[picks].T).max(-1).values).clamp_min(0).double()
        for row in distance.nonzero().squeeze(1).tolist():
            extend([*picks, row], probability * float(distance[row] / distance.sum()))

    for first in range(len(units)):
        extend([first], 1 / len(units))
    return found


def test_blocked_kmeans_plus_plus_draws_as_k_means_plus_plus_does():
    # two near-duplicate pairs: a block that ignored its own earlier seeds would often take both
    # of a pair (exact k-means++ almost never does)
    directions = torch.tensor([[1.0, 0, 0], [1, 0.05, 0], [0, 1, 0], [0, 1, 0.05], [0, 0, 1], [-1, 1, 1]])
    units = F.normalize(directions, dim=-1)
    exact = exact_seed_set_probabilities(units, 4)
    generator, runs, counts = torch.Generator().manual_seed(0), 1500, {}
    for _ in range(runs):
        seeds = kmeans_plus_plus(units, 4, generator)
        key = frozenset((seeds @ units.T).argmax(-1).tolist())
        counts[key] = counts.get(key, 0) + 1
    total_variation = 0.5 * sum(
        abs(counts.get(k, 0) / runs - exact.get(k, 0.0)) for k in exact.keys() | counts
    )
    assert total_variation < 0.04


def test_kmeans_plus_plus_repeats_vectors_once_all_are_seeds():
    units = F.normalize(torch.ones(3, 4), dim=-1)  # one distinct vector, five seeds
    seeds = kmeans_plus_plus(units, 5, torch.Generator().manual_seed(0))
    assert seeds.shape == (5, 4)
    assert torch.allclose(seeds, units[0].expand(5, 4))
