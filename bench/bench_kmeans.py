"""Benchmark: the codebook's k-means initialisation at the default job's sizes, torch against faiss.

Clusters N vectors of width e into C codes with `iters` Lloyd iterations (the default job: N = 12,288
= train.init_vectors, C = 4,096 = bottleneck.n_codes, iters = 5 = train.kmeans_iters, e = 576) by:
  torch-sequential the torch k-means of before: k-means++ with one matrix-vector product per seed,
                   then torch Lloyd iterations;
  torch            `kmeans_plus_plus` (k-means++ drawn in blocks), then torch Lloyd (`spherical_kmeans`);
  faiss            faiss.Kmeans(spherical=True) from random seeds (faiss's own init);
  faiss-x4         the same with 4x the iterations (faiss stops early once converged);
  faiss-pp         `kmeans_plus_plus`, then faiss.Kmeans(spherical=True) from those seeds;
  kmeans_codes     the package's `kmeans_codes` as the trainer calls it (= torch).
Needs faiss (`pip install faiss-cpu`), which the package itself does not use.
`seconds` is wall-clock, `cpu_s` the process's CPU seconds over all threads (on a shared machine the
steadier of the two); `seeding_s` and `lloyd_s` split the wall-clock into seeding and Lloyd iterations.
Quality: the mean cosine of each vector to its nearest centroid (`fit`, on the clustered vectors;
`held_out`, on --held-out vectors not clustered), and the codes no clustered vector is nearest to (`empty`).

Vectors are layer-20 activations of SmolLM2-135M-Instruct on WordNet noun glosses (`--source real`:
minutes to compute on a shared 2-core CPU, so --cache keeps them) or noisy copies of random directions
with Zipf-sized clusters (`--source synthetic`).

    python bench/bench_kmeans.py --source real --cache bench/results/kmeans-real-vectors.pt
    python bench/bench_kmeans.py --source synthetic --methods torch faiss
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Callable
from pathlib import Path

import faiss
import torch
import torch.nn.functional as F
from common import device_name, print_table, write_json

from codeunlearn.core.config import BottleneckConfig
from codeunlearn.data.batching import encode_texts, make_batches
from codeunlearn.data.wordnet import read_wordnet
from codeunlearn.model.assets import load_pretrained
from codeunlearn.model.code_init import kmeans_codes, kmeans_plus_plus, spherical_kmeans
from codeunlearn.model.surgery import bypassed, forward_to_site, insert_bottleneck


@torch.no_grad()
def real_vectors(n_vectors: int, model_name: str, layer: int, seed: int) -> torch.Tensor:
    """Site activations (content positions, BOS excluded) of random WordNet noun glosses (n_vectors, d)."""
    model, tokenizer = load_pretrained(model_name)
    codebook_model = insert_bottleneck(model, tokenizer, BottleneckConfig(layer=layer), model_name)
    texts = read_wordnet("/usr/share/wordnet")["text"].to_pylist()
    random.Random(seed).shuffle(texts)
    rows, total = [], 0
    for start in range(0, len(texts), 512):
        encoded = encode_texts(tokenizer, texts[start : start + 512], 48)
        for batch in make_batches(encoded, 16, tokenizer.pad_token_id):
            with bypassed(codebook_model):
                hidden = forward_to_site(codebook_model, batch.input_ids, batch.attention_mask)[0]
            content = batch.attention_mask.bool().clone()
            content[:, 0] = False
            rows.append(hidden[content])
            total += len(rows[-1])
        if total >= n_vectors:
            break
    vectors = torch.cat(rows)
    return vectors[torch.randperm(len(vectors), generator=torch.Generator().manual_seed(seed))][:n_vectors]


def synthetic_vectors(n_vectors: int, dim: int, n_clusters: int, seed: int) -> torch.Tensor:
    """Noisy copies of `n_clusters` random directions, cluster sizes Zipf-like, norms about 250."""
    generator = torch.Generator().manual_seed(seed)
    centers = F.normalize(torch.randn(n_clusters, dim, generator=generator), dim=-1)
    weights = 1 / torch.arange(1, n_clusters + 1).float()
    labels = torch.multinomial(weights, n_vectors, replacement=True, generator=generator)
    noise = torch.randn(n_vectors, dim, generator=generator) * 0.6 / dim**0.5
    return F.normalize(centers[labels] + noise, dim=-1) * 250


def quality(centroids: torch.Tensor, fit: torch.Tensor, held_out: torch.Tensor) -> dict:
    """Mean cosine to the nearest centroid on both sets, and the centroids nearest to no fit vector."""
    units = F.normalize(centroids.float(), dim=-1)

    def nearest(vectors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        best = [(F.normalize(c, dim=-1) @ units.T).max(-1) for c in vectors.split(4096)]
        return torch.cat([b.values for b in best]), torch.cat([b.indices for b in best])

    fit_cos, assign = nearest(fit)
    held_cos, _ = nearest(held_out) if len(held_out) else (torch.zeros(1), None)
    empty = int((torch.bincount(assign, minlength=len(units)) == 0).sum())
    return {"fit": float(fit_cos.mean()), "held_out": float(held_cos.mean()), "empty": empty}


def sequential_kmeans_plus_plus(
    units: torch.Tensor, n_codes: int, generator: torch.Generator
) -> torch.Tensor:
    """The k-means++ seeding `kmeans_codes` used before: one matrix-vector product per seed."""
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


def faiss_lloyd(
    units: torch.Tensor, n_codes: int, iters: int, generator: torch.Generator, seeds: torch.Tensor
) -> torch.Tensor:
    """faiss.Kmeans(spherical=True) from `seeds`, every vector used, on torch's thread count."""
    kmeans = faiss.Kmeans(
        units.shape[1],
        n_codes,
        niter=iters,
        spherical=True,
        min_points_per_centroid=1,  # fewer than faiss's 39 per centroid is the case here
        max_points_per_centroid=units.shape[0],  # no subsampling
    )
    kmeans.train(units.contiguous().numpy(), init_centroids=seeds.contiguous().numpy())
    return torch.from_numpy(kmeans.centroids)


def faiss_random_seeds(
    units: torch.Tensor, n_codes: int, iters: int, generator: torch.Generator, seeds: None = None
) -> torch.Tensor:
    """faiss.Kmeans from its own init: C vectors drawn at random (seeded from `generator`)."""
    kmeans = faiss.Kmeans(
        units.shape[1],
        n_codes,
        niter=iters,
        spherical=True,
        seed=int(torch.randint(2**31 - 1, (1,), generator=generator)),
        min_points_per_centroid=1,
        max_points_per_centroid=units.shape[0],
    )
    kmeans.train(units.numpy())
    return torch.from_numpy(kmeans.centroids)


def package_kmeans(
    units: torch.Tensor, n_codes: int, iters: int, generator: torch.Generator, seeds: None = None
) -> torch.Tensor:
    return kmeans_codes(units, n_codes, iters, generator)


def methods(iters: int) -> dict[str, tuple[Callable | None, Callable, int]]:
    """name -> (seeding or None, Lloyd iterations from its seeds, iterations)."""
    return {
        "torch-sequential": (sequential_kmeans_plus_plus, spherical_kmeans, iters),
        "torch": (kmeans_plus_plus, spherical_kmeans, iters),
        "faiss": (None, faiss_random_seeds, iters),
        "faiss-x4": (None, faiss_random_seeds, 4 * iters),
        "faiss-pp": (kmeans_plus_plus, faiss_lloyd, iters),
        "kmeans_codes": (None, package_kmeans, iters),
    }


def measure(
    method: tuple[Callable | None, Callable, int], units: torch.Tensor, codes: int, seed: int
) -> dict:
    """Centroids, wall-clock seconds (all, seeding, Lloyd) and the process's CPU seconds (all threads)."""
    seeding, lloyd, iters = method
    generator = torch.Generator().manual_seed(seed)
    started, started_cpu = time.perf_counter(), time.process_time()
    seeds = seeding(units, codes, generator) if seeding else None
    seeded = time.perf_counter()
    centroids = lloyd(units, codes, iters, generator, seeds=seeds)
    done, done_cpu = time.perf_counter(), time.process_time()
    return {
        "centroids": centroids,
        "seconds": done - started,
        "cpu_s": done_cpu - started_cpu,
        "seeding_s": seeded - started if seeding else None,
        "lloyd_s": done - seeded if seeding else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", choices=["real", "synthetic"], default="synthetic")
    parser.add_argument("--vectors", type=int, default=12288, help="N: train.init_vectors")
    parser.add_argument("--codes", type=int, default=4096, help="C: bottleneck.n_codes")
    parser.add_argument("--iters", type=int, default=5, help="Lloyd iterations: train.kmeans_iters")
    parser.add_argument("--dim", type=int, default=576, help="synthetic width (SmolLM2's hidden size)")
    parser.add_argument("--clusters", type=int, default=2048, help="synthetic clusters")
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--layer", type=int, default=20)
    parser.add_argument("--methods", nargs="*", choices=list(methods(1)), default=list(methods(1)))
    parser.add_argument("--held-out", type=int, default=4096, help="vectors scored but not clustered")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--cache", type=Path, default=None, help="real vectors saved here once, read back after (a .pt file)"
    )
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    faiss.omp_set_num_threads(torch.get_num_threads())
    args.shape = f"{args.source}-n{args.vectors}-c{args.codes}-i{args.iters}"

    started, total = time.perf_counter(), args.vectors + args.held_out
    if args.source == "synthetic":
        vectors = synthetic_vectors(total, args.dim, args.clusters, args.seed)
    elif args.cache and args.cache.is_file() and len(cached := torch.load(args.cache)) >= total:
        vectors = cached[:total]
    else:
        vectors = real_vectors(total, args.model, args.layer, args.seed)
        if args.cache:
            args.cache.parent.mkdir(parents=True, exist_ok=True)
            torch.save(vectors, args.cache)
    fit, held_out = vectors[: args.vectors], vectors[args.vectors :]
    elapsed_s = time.perf_counter() - started
    print(f"{len(vectors)} {args.source} vectors of width {vectors.shape[1]} in {elapsed_s:.1f} s")

    rows, table = [], methods(args.iters)
    for name in args.methods:
        # kmeans_codes takes the samples as they are; the others, their directions
        units = fit if name == "kmeans_codes" else F.normalize(fit, dim=-1)
        result = measure(table[name], units, args.codes, args.seed)
        rows.append({"method": name, **{k: v for k, v in result.items() if k != "centroids"}})
        rows[-1].update(quality(result["centroids"], fit, held_out))
        print_table(rows[-1:], list(rows[-1]))
    if not rows:
        return
    print()
    print_table(rows, ["method", "seconds", "cpu_s", "seeding_s", "lloyd_s", "fit", "held_out", "empty"])
    write_json(
        "kmeans", args, torch.device("cpu"), {"rows": rows, "machine": device_name(torch.device("cpu"))}
    )


if __name__ == "__main__":
    main()
