"""Benchmark: greedy generation tokens/s (KV cache) of the masked codebook model vs the base model.

Same model, prompts and lengths; the base model is the codebook model with its bottleneck bypassed.
The masked model has `--n-masked` codes masked (next-best policy), as after a deletion request.
On CUDA the weights are bf16.

    python bench/bench_generation.py                         # CPU, small shape
    python bench/bench_generation.py --shape smollm2-135m    # CUDA
"""

from __future__ import annotations

import torch
from common import (
    SHAPES,
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

from codeunlearn.model.surgery import bypassed, remove_bottleneck


def main() -> None:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--prompt", type=int, default=0, help="prompt tokens; 0: 16 on CPU, 128 on CUDA")
    parser.add_argument(
        "--new-tokens", type=int, default=0, help="generated tokens; 0: 16 on CPU, 128 on CUDA"
    )
    parser.add_argument("--n-masked", type=int, default=192)
    args = parser.parse_args()
    device, shape = resolve_device(args.device), SHAPES[args.shape]
    on_cuda = device.type == "cuda"
    rows = args.batch or shape.batch
    prompt_len = args.prompt or (128 if on_cuda else 16)
    new_tokens = args.new_tokens or (128 if on_cuda else 16)
    model = build_model(shape, device, torch.bfloat16 if on_cuda else torch.float32)
    prompt = random_batch(shape, rows, prompt_len, torch.Generator().manual_seed(0)).to(device)
    tokens = rows * new_tokens
    results = []
    for n_codes in args.n_codes or shape.n_codes:
        codebook_model = with_bottleneck(model, shape, n_codes, args)
        codebook_model.bottleneck.to(model.dtype)
        masked = torch.randperm(n_codes, generator=torch.Generator().manual_seed(1))[: args.n_masked]
        codebook_model.bottleneck.set_masked(masked)

        @torch.no_grad()
        def generate() -> None:
            model.generate(
                input_ids=prompt.input_ids,
                attention_mask=prompt.attention_mask,
                max_new_tokens=new_tokens,
                min_new_tokens=new_tokens,  # random weights may emit EOS early: fix the length
                do_sample=False,
                use_cache=True,
                pad_token_id=2,
            )

        with bypassed(codebook_model):
            base_s = timed(generate, device, args.warmup, args.repeats)
        masked_s = timed(generate, device, args.warmup, args.repeats)
        results.append(
            {
                "n_codes": n_codes,
                "base_tok_s": tokens / base_s,
                "masked_tok_s": tokens / masked_s,
                "masked_overhead": masked_s / base_s - 1,
                "base_s": base_s,
                "masked_s": masked_s,
            }
        )
        remove_bottleneck(codebook_model)
    print(
        f"greedy generation, {args.shape}, {rows} prompts x {prompt_len} tokens + {new_tokens} new, "
        f"{args.n_masked} codes masked, k={args.top_k}, {device_name(device)}"
    )
    print_table(results, ["n_codes", "base_tok_s", "masked_tok_s", "masked_overhead"])
    write_json("generation", args, device, {"new_tokens_per_call": tokens, "results": results})


if __name__ == "__main__":
    main()
