"""Benchmark: codebook training step vs the base model's training step, same shape and batch.

For each codebook size C it times, with the library's own step (`training._train_step`):
  base      every weight trained, no bottleneck (plain fine-tuning);
  joint     every weight and the bottleneck trained (mode joint);
  frozen    the bottleneck only, layers below cached as `train` does (mode frozen);
  codebook  the bottleneck's own forward + backward on the cached activations (its share of a step).
MFU counts 6 x matmul parameters x tokens + 12 x layers x hidden x seq per token (attention scores,
no causal halving), over a stated peak: the measured dense matmul ceiling, or --peak-tflops.

    python bench/bench_training.py                                   # CPU, small shape
    python bench/bench_training.py --shape smollm2-135m --peak-tflops 989   # CUDA, bf16 autocast
    python bench/bench_training.py --precision fp32    # as the CPU figures before train.precision
"""

from __future__ import annotations

import contextlib
import gc

import torch
from common import (
    SHAPES,
    base_parser,
    build_model,
    device_name,
    matmul_tflops,
    n_matmul_params,
    print_table,
    random_batch,
    resolve_device,
    timed,
    with_bottleneck,
    write_json,
)

from codeunlearn.core.config import TrainConfig
from codeunlearn.model.precision import training_precision
from codeunlearn.model.surgery import bypassed, forward_to_site, remove_bottleneck
from codeunlearn.training.trainer import _train_step, compiled_layers, trainable_parameters


def optimizer_for(codebook_model, mode: str, use_bottleneck: bool) -> torch.optim.Optimizer:
    groups = trainable_parameters(codebook_model, mode, use_bottleneck)
    fused = {"fused": True} if codebook_model.device.type == "cuda" else {}
    return torch.optim.AdamW([dict(g, lr=1e-6) for g in groups], **fused)


def time_step(codebook_model, batch, hidden, mode: str, use_bottleneck: bool, args) -> float:
    """Median seconds of one optimizer step of `_train_step` in `mode`."""
    config = TrainConfig(mode=mode, lr=1e-6, base_lr=1e-6, precision=args.precision)
    optimizer = optimizer_for(codebook_model, mode, use_bottleneck)
    codebook_model.model.train(mode == "joint")

    def step() -> None:
        _train_step(codebook_model, optimizer, batch, hidden, config, use_bottleneck)

    try:
        if use_bottleneck:  # as `train` runs its steps: a grouped search regroups at re-seeding only
            with codebook_model.bottleneck.holding_groups():
                return timed(step, codebook_model.device, args.warmup, args.repeats)
        with bypassed(codebook_model):
            return timed(step, codebook_model.device, args.warmup, args.repeats)
    finally:
        codebook_model.model.requires_grad_(False)
        gc.collect()


def time_codebook(codebook_model, hidden: torch.Tensor, args) -> float:
    """Forward + backward of the bottleneck alone on cached activations (B, T, d)."""
    bottleneck = codebook_model.bottleneck
    bottleneck.requires_grad_(True)
    source = hidden.detach().requires_grad_(True)

    def step() -> None:
        with training_precision(codebook_model.device, args.precision):
            out = bottleneck(source)
            loss = out.hidden.float().pow(2).mean() + out.recon_error.mean()
        loss.backward()
        bottleneck.zero_grad(set_to_none=True)

    with bottleneck.holding_groups():
        return timed(step, codebook_model.device, args.warmup, args.repeats)


def time_all(codebook_model, batch, args) -> dict[str, float]:
    """Seconds of a base, joint and frozen step, and of the bottleneck's own forward + backward."""
    device = codebook_model.device
    with torch.no_grad(), bypassed(codebook_model), training_precision(device, args.precision):
        ids, attention = batch.input_ids.to(device), batch.attention_mask.to(device)
        hidden = forward_to_site(codebook_model, ids, attention)[0]
    hidden = hidden.float()  # as `site_activations` caches it for modes frozen/above
    return {
        "base_step_s": time_step(codebook_model, batch, None, "joint", False, args),
        "joint_step_s": time_step(codebook_model, batch, None, "joint", True, args),
        "frozen_step_s": time_step(codebook_model, batch, hidden, "frozen", True, args),
        "codebook_fwd_bwd_s": time_codebook(codebook_model, hidden, args),
    }


def figures(n_codes: int, times: dict[str, float], tokens: int, flops: float, peak: float) -> dict:
    base_s, joint_s, frozen_s = times["base_step_s"], times["joint_step_s"], times["frozen_step_s"]
    return {
        "n_codes": n_codes,
        **times,
        "base_tok_s": tokens / base_s,
        "joint_tok_s": tokens / joint_s,
        "frozen_tok_s": tokens / frozen_s,
        "joint_overhead": joint_s / base_s - 1,
        "frozen_over_base": frozen_s / base_s,
        "codebook_share_of_joint": times["codebook_fwd_bwd_s"] / joint_s,
        "base_tflops": flops / base_s / 1e12,
        "joint_tflops": flops / joint_s / 1e12,
        "base_mfu": flops / base_s / 1e12 / peak,
        "joint_mfu": flops / joint_s / 1e12 / peak,
    }


def main() -> None:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument(
        "--precision", choices=["auto", "fp32", "bf16"], default="auto", help="train.precision of the steps"
    )
    parser.add_argument("--peak-tflops", type=float, default=0.0, help="peak for MFU; 0: measured matmul")
    parser.add_argument(
        "--compile", action="store_true", help="torch.compile each decoder layer, as train.compile=true does"
    )
    args = parser.parse_args()
    device, shape = resolve_device(args.device), SHAPES[args.shape]
    rows, seq = args.batch or shape.batch, args.seq or shape.seq
    tokens = rows * seq
    measured = matmul_tflops(device)
    peak = args.peak_tflops or measured
    model = build_model(shape, device)
    flops = tokens * (6 * n_matmul_params(model) + 12 * shape.layers * shape.hidden * seq)
    batch = random_batch(shape, rows, seq, torch.Generator().manual_seed(0))
    results = []
    for n_codes in args.n_codes or shape.n_codes:
        codebook_model = with_bottleneck(model, shape, n_codes, args)
        with compiled_layers(codebook_model) if args.compile else contextlib.nullcontext():
            times = time_all(codebook_model, batch, args)
        results.append(figures(n_codes, times, tokens, flops, peak))
        remove_bottleneck(codebook_model)
        del codebook_model
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    print(
        f"training step, {args.shape} ({n_matmul_params(model) / 1e6:.1f}M matmul params), "
        f"batch {rows}x{seq}, layer {shape.layer}, k={args.top_k}, {device_name(device)}, "
        f"peak {peak:.1f} TFLOP/s ({'given' if args.peak_tflops else 'measured matmul'}; "
        f"measured {measured:.1f})"
    )
    print_table(
        results,
        [
            "n_codes",
            "base_tok_s",
            "joint_tok_s",
            "joint_overhead",
            "frozen_over_base",
            "codebook_share_of_joint",
            "joint_tflops",
            "joint_mfu",
            "base_mfu",
        ],
    )
    write_json(
        "training",
        args,
        device,
        {
            "tokens_per_step": tokens,
            "flops_per_step": flops,
            "peak_tflops": peak,
            "measured_matmul_tflops": measured,
            "results": results,
        },
    )


if __name__ == "__main__":
    main()
