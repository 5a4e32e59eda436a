"""Benchmark: mining tokens/s (`mining.count_codes`) vs a plain no-grad forward up to the bottleneck layer.

Both run the same batches on the same model, layers 0..layer only, bf16 autocast on CUDA. Mining adds
the top-k over C codes at every content token and the on-device counting; the ratio says how close
mining comes to the forward it cannot avoid. (DuckDB aggregation: bench/bench_store.py.)

    python bench/bench_mining.py                          # CPU, small shape
    python bench/bench_mining.py --shape smollm2-135m     # CUDA
"""

from __future__ import annotations

import torch
from common import (
    SHAPES,
    autocast,
    base_parser,
    build_model,
    device_name,
    print_table,
    random_batch,
    resolve_device,
    timed,
    with_bottleneck,
    write_json,
)

from codeunlearn.data.batching import Batch
from codeunlearn.model.surgery import CodebookModel, bypassed, forward_to_site, remove_bottleneck
from codeunlearn.unlearning.mining import count_codes


@torch.no_grad()
def plain_forward(codebook_model: CodebookModel, batches: list[Batch]) -> None:
    """Layers 0..layer over every batch, bottleneck bypassed: the least any mining must compute."""
    with bypassed(codebook_model), autocast(codebook_model.device):
        for batch in batches:
            forward_to_site(codebook_model, batch.input_ids, batch.attention_mask)


def main() -> None:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=4, help="batches per timed call")
    args = parser.parse_args()
    device, shape = resolve_device(args.device), SHAPES[args.shape]
    rows, seq = args.batch or shape.batch, args.seq or shape.seq
    generator = torch.Generator().manual_seed(0)
    batches = [random_batch(shape, rows, seq, generator) for _ in range(args.batches)]
    on_device = [batch.to(device) for batch in batches]
    tokens = rows * seq * args.batches
    model = build_model(shape, device)
    results = []
    for n_codes in args.n_codes or shape.n_codes:
        codebook_model = with_bottleneck(model, shape, n_codes, args)
        forward_s = timed(
            lambda m=codebook_model: plain_forward(m, on_device), device, args.warmup, args.repeats
        )
        mining_s = timed(
            lambda m=codebook_model: count_codes(m, on_device), device, args.warmup, args.repeats
        )
        results.append(
            {
                "n_codes": n_codes,
                "forward_tok_s": tokens / forward_s,
                "mining_tok_s": tokens / mining_s,
                "mining_over_forward": forward_s / mining_s,
                "forward_s": forward_s,
                "mining_s": mining_s,
            }
        )
        remove_bottleneck(codebook_model)
    print(
        f"mining, {args.shape}, layers 0..{shape.layer}, {args.batches} batches of {rows}x{seq}, "
        f"k={args.top_k}, coarse_candidates={args.coarse_candidates}, {device_name(device)}"
    )
    print_table(results, ["n_codes", "forward_tok_s", "mining_tok_s", "mining_over_forward"])
    write_json("mining", args, device, {"tokens_per_call": tokens, "results": results})


if __name__ == "__main__":
    main()
