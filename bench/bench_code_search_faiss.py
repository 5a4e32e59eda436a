"""Benchmark: the bottleneck's top-k code search against faiss's (IndexFlatIP, IndexIVFFlat), on a CPU.

Codes are the k-means codes of real activations (how training starts them: `kmeans_codes` over
--fit-vectors layer-20 activations of SmolLM2-135M-Instruct), tokens are other activations of the same
site, so near-ties and cluster structure are as the bottleneck meets them. Variants:
  exact            `CodebookBottleneck.select`, bottleneck.search=exact (the default);
  grouped-P        bottleneck.search=grouped, P probed groups of about sqrt(C) codes (code_index.py);
  faiss-flat       faiss.IndexFlatIP over the unit codes (exact);
  faiss-ivf-P      faiss.IndexIVFFlat, inner product, nlist = the grouped search's G, nprobe = P.
`recall` is the mean share of a token's exact top-k codes found, `differ` the share of tokens whose set
of k codes differs from exact, `build_ms` the one-off cost of an index (grouping, or IVF training and
adding the codes).

    python bench/bench_code_search_faiss.py --cache bench/results/kmeans-real-vectors.pt
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import faiss
import torch
import torch.nn.functional as F
from bench_kmeans import real_vectors
from common import device_name, print_table, timed, write_json

from codeunlearn.core.config import BottleneckConfig
from codeunlearn.model.bottleneck import CodebookBottleneck
from codeunlearn.model.code_init import kmeans_codes


def load_vectors(args: argparse.Namespace) -> torch.Tensor:
    """--fit-vectors + --tokens real activations, from --cache when it holds enough (bench_kmeans.py)."""
    total = args.fit_vectors + args.tokens
    if args.cache and args.cache.is_file() and len(cached := torch.load(args.cache)) >= total:
        return cached[:total]
    vectors = real_vectors(total, args.model, args.layer, args.seed)
    if args.cache:
        args.cache.parent.mkdir(parents=True, exist_ok=True)
        torch.save(vectors, args.cache)
    return vectors


def holding(codes: torch.Tensor, config: BottleneckConfig) -> CodebookBottleneck:
    """A bottleneck of `config` whose codes are `codes` (C, e)."""
    bottleneck = CodebookBottleneck(codes.shape[1], config)
    bottleneck.reset_codes(torch.arange(len(codes)), codes)
    return bottleneck


def faiss_index(units: torch.Tensor, n_lists: int, probes: int) -> faiss.Index:
    """IndexFlatIP (n_lists 0) or IndexIVFFlat over unit codes, inner product, trained and filled."""
    if not n_lists:
        index = faiss.IndexFlatIP(units.shape[1])
    else:
        quantizer = faiss.IndexFlatIP(units.shape[1])
        index = faiss.IndexIVFFlat(quantizer, units.shape[1], n_lists, faiss.METRIC_INNER_PRODUCT)
        index.cp.seed = 0
        index.cp.min_points_per_centroid = 1  # C codes into about sqrt(C) lists: fewer than faiss's 39
        index.train(units.numpy())
        index.nprobe = probes
    index.add(units.numpy())
    return index


def overlap(found: torch.Tensor, exact: torch.Tensor) -> dict:
    """Recall of the exact top-k sets (N, k) and the share of tokens whose set differs."""
    hits = (found[:, :, None] == exact[:, None, :]).any(-1).float()  # (N, k) found code in exact set
    return {"recall": float(hits.mean()), "differ": float((hits.sum(-1) < exact.shape[1]).float().mean())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--codes", type=int, default=4096, help="C: bottleneck.n_codes")
    parser.add_argument("--top-k", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=4096, help="tokens searched per call")
    parser.add_argument("--fit-vectors", type=int, default=12288, help="activations the codes come from")
    parser.add_argument("--probes", type=int, nargs="*", default=[8, 16, 32], help="P >= k (probes, nprobe)")
    parser.add_argument("--iters", type=int, default=5, help="k-means iterations for the codes")
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--layer", type=int, default=20)
    parser.add_argument(
        "--cache", type=Path, default=None, help="real vectors, as bench_kmeans.py saves them"
    )
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    args.shape = f"real-c{args.codes}-n{args.tokens}"
    cpu = torch.device("cpu")
    faiss.omp_set_num_threads(torch.get_num_threads())

    vectors = load_vectors(args)
    generator = torch.Generator().manual_seed(args.seed)
    units = F.normalize(kmeans_codes(vectors[: args.fit_vectors], args.codes, args.iters, generator), dim=-1)
    tokens = F.normalize(vectors[args.fit_vectors :], dim=-1)
    base = BottleneckConfig(n_codes=args.codes, top_k=args.top_k)
    groups = base.n_search_groups

    rows, exact = [], holding(units, base).select(tokens)
    for name, config in [
        ("exact", base),
        *(
            (f"grouped-{p}", dataclasses.replace(base, search="grouped", search_probes=p))
            for p in args.probes
        ),
    ]:
        bottleneck = holding(units, config)
        started = time.perf_counter()
        found = bottleneck.select(tokens)  # a grouped search builds its index here, once per set of codes
        first_s = time.perf_counter() - started
        seconds = timed(lambda b=bottleneck: b.select(tokens), cpu, args.warmup, args.repeats)
        build_ms = (first_s - seconds) * 1e3 if config.search == "grouped" else None
        rows.append({"variant": name, "ms": seconds * 1e3, "build_ms": build_ms, **overlap(found, exact)})
        print_table(rows[-1:], list(rows[-1]))
    for name, n_lists, probes in [
        ("faiss-flat", 0, 0),
        *((f"faiss-ivf-{p}", groups, p) for p in args.probes),
    ]:
        started = time.perf_counter()
        index = faiss_index(units, n_lists, probes)
        build_ms = (time.perf_counter() - started) * 1e3
        found = torch.from_numpy(index.search(tokens.numpy(), args.top_k)[1])
        seconds = timed(lambda i=index: i.search(tokens.numpy(), args.top_k), cpu, args.warmup, args.repeats)
        rows.append({"variant": name, "ms": seconds * 1e3, "build_ms": build_ms, **overlap(found, exact)})
        print_table(rows[-1:], list(rows[-1]))

    sizes = f"top-{args.top_k} of {args.codes:,} codes, {len(tokens):,} tokens, G = {groups}"
    print(f"\n{sizes}, {device_name(cpu)}:")
    print_table(rows, ["variant", "ms", "build_ms", "recall", "differ"])
    write_json("code_search_faiss", args, cpu, {"groups": groups, "rows": rows})


if __name__ == "__main__":
    main()
