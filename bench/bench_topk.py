"""Benchmark: the bottleneck's top-k code selection at scale, variants timed and checked against exact.

Variants of `CodebookBottleneck.select` over N tokens x C codes (k = 8):
  exact            fp32 similarities, chunk_tokens at a time (the default);
  exact-codes      fp32, also chunked over codes (chunk_codes), partial top-k merged;
  exact-autocast   the default under bf16 autocast (how a CUDA training step calls it);
  coarse-M         bf16 ranking keeps M candidates, fp32 re-ranks them (bottleneck.coarse_candidates=M);
  grouped-P        the codes of each token's P best groups of about sqrt(C) (bottleneck.search=grouped),
                   the index built once before timing, as it is once per set of codes.
`differ` is the share of tokens whose set of k codes differs from exact fp32's.

    python bench/bench_topk.py                                 # CPU: N=4096, C=16384
    python bench/bench_topk.py --tokens 32768 --codes 65536    # CUDA, the issue's size
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import torch
from common import autocast, device_name, print_table, resolve_device, timed, write_json

from codeunlearn.core.config import BottleneckConfig
from codeunlearn.model.bottleneck import CodebookBottleneck


def variants(args: argparse.Namespace) -> dict[str, tuple[dict, bool]]:
    """name -> (BottleneckConfig overrides, run under autocast)."""
    found = {
        "exact": ({}, False),
        "exact-codes": ({"chunk_codes": args.chunk_codes}, False),
        "exact-autocast": ({}, True),
    }
    for m in args.candidates:
        found[f"coarse-{m}"] = ({"coarse_candidates": m}, False)
        found[f"coarse-{m}-codes"] = ({"coarse_candidates": m, "chunk_codes": args.chunk_codes}, False)
    for p in args.probes:
        found[f"grouped-{p}"] = ({"search": "grouped", "search_probes": p}, False)
        found[f"grouped-{p}-autocast"] = ({"search": "grouped", "search_probes": p}, True)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--tokens", type=int, default=4096)
    parser.add_argument("--codes", type=int, default=16384)
    parser.add_argument("--dim", type=int, default=576, help="code width (SmolLM2's hidden size)")
    parser.add_argument("--top-k", type=int, default=8)
    parser.add_argument("--chunk-tokens", type=int, default=4096)
    parser.add_argument("--chunk-codes", type=int, default=16384)
    parser.add_argument("--candidates", type=int, nargs="*", default=[32, 64])
    parser.add_argument("--probes", type=int, nargs="*", default=[8, 16], help="grouped search probes P")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    args.shape = f"n{args.tokens}-c{args.codes}"
    device = resolve_device(args.device)
    generator = torch.Generator().manual_seed(0)
    base = BottleneckConfig(n_codes=args.codes, top_k=args.top_k, chunk_tokens=args.chunk_tokens)
    torch.manual_seed(0)
    reference = CodebookBottleneck(args.dim, base).to(device)
    # Tokens near mixtures of a few codes, as after training, so near-ties happen as they would.
    picks = torch.randint(args.codes, (args.tokens, 4), generator=generator).to(device)
    noise = torch.randn(args.tokens, args.dim, generator=generator).to(device)
    h = reference.codes.detach()[picks].mean(1) + 0.05 * noise
    exact = reference.select(h).sort(-1).values
    results = []
    for name, (overrides, under_autocast) in variants(args).items():
        bottleneck = CodebookBottleneck(args.dim, dataclasses.replace(base, **overrides)).to(device)
        bottleneck.load_state_dict(reference.state_dict())

        def run(b: CodebookBottleneck = bottleneck, cast: bool = under_autocast) -> torch.Tensor:
            with autocast(device) if cast else torch.autocast(device.type, enabled=False):
                return b.select(h)

        run()  # a grouped search builds its index here, once per set of codes
        seconds = timed(run, device, args.warmup, args.repeats)
        differ = (run().sort(-1).values != exact).any(-1).float().mean().item()
        results.append(
            {"variant": name, "ms": seconds * 1e3, "tok_s": args.tokens / seconds, "differ": differ}
        )
    print(
        f"top-{args.top_k} of {args.codes:,} codes (width {args.dim}), {args.tokens:,} tokens, "
        f"{device_name(device)}"
    )
    print_table(results, ["variant", "ms", "tok_s", "differ"])
    write_json("topk", args, device, {"results": results})


if __name__ == "__main__":
    main()
