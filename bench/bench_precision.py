"""Benchmark: the default job's training work in fp32 and under bf16 autocast (train.precision).

Random-weight SmolLM2-135M shape, the bottleneck at layer 20, C = 4,096, k = 8, batches of 16 x 26
tokens (about a default-job batch of WordNet glosses). Per setting it times what the training stage
repeats 750 times: the layers below the bottleneck for one batch (the activation cache, no gradient) and
one mode-`above` step with the library's own `_train_step`. Settings:
  fp32          train.precision=fp32 with the AdamW the trainer used before (one kernel per tensor)
  fp32 fused    train.precision=fp32, fused AdamW (what `train` uses now)
  bf16 flash    bf16 autocast with the CPU flash-attention kernel (why `training_precision` avoids it)
  bf16          train.precision=bf16: autocast with the math attention kernel on a CPU, fused AdamW
On a CPU without bf16 matrix units (no AMX / AVX512-BF16) the bf16 rows are emulated and slow, which is
why train.precision=auto trains there in fp32.

    python bench/bench_precision.py                 # the 2-core CPU: about 2 minutes
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Callable, Iterator

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

from codeunlearn.core.config import TrainConfig
from codeunlearn.model.precision import training_precision, trains_in_bf16
from codeunlearn.model.surgery import bypassed, forward_to_site
from codeunlearn.training.trainer import _train_step, trainable_parameters

SETTINGS = {  # name -> (train.precision, fused AdamW, force the flash-attention kernel)
    "fp32": ("fp32", False, False),
    "fp32 fused": ("fp32", True, False),
    "bf16 flash": ("bf16", True, True),
    "bf16": ("bf16", True, False),
}


@contextlib.contextmanager
def flash_bf16(device: torch.device) -> Iterator[None]:
    """bf16 autocast with the default (flash) attention kernel: training_precision less its kernel choice."""
    with torch.autocast(device.type, dtype=torch.bfloat16):
        yield


def time_setting(codebook_model, batch, name: str, args) -> dict:
    precision, fused, flash = SETTINGS[name]
    device = codebook_model.device
    context: Callable[[], contextlib.AbstractContextManager] = (
        (lambda: flash_bf16(device)) if flash else (lambda: training_precision(device, precision))
    )
    ids, attention = batch.input_ids.to(device), batch.attention_mask.to(device)

    def below() -> torch.Tensor:
        with torch.no_grad(), bypassed(codebook_model), context():
            return forward_to_site(codebook_model, ids, attention)[0]

    hidden = below().float()
    # the flash row runs its step under its own autocast; fp32 inside keeps `_train_step` from adding another
    config = TrainConfig(mode="above", lr=1e-6, base_lr=1e-6, precision="fp32" if flash else precision)
    groups = trainable_parameters(codebook_model, "above", True)
    optimizer = torch.optim.AdamW([dict(g, lr=1e-6) for g in groups], fused=fused)

    def step() -> None:
        with context() if flash else contextlib.nullcontext():
            _train_step(codebook_model, optimizer, batch, hidden, config, True)

    try:
        with codebook_model.bottleneck.holding_groups():
            step_s = timed(step, device, args.warmup, args.repeats)
        below_s = timed(below, device, args.warmup, args.repeats)
    finally:
        codebook_model.model.requires_grad_(False)
        gc.collect()
    return {"setting": name, "below_s": below_s, "step_s": step_s}


def main() -> None:
    parser = base_parser(__doc__.splitlines()[0])
    parser.set_defaults(shape="smollm2-135m", batch=16, seq=26, n_codes=[4096], repeats=5, warmup=2)
    args = parser.parse_args()
    device, shape = resolve_device(args.device), SHAPES[args.shape]
    model = build_model(shape, device)
    codebook_model = with_bottleneck(model, shape, args.n_codes[0], args)
    batch = random_batch(shape, args.batch, args.seq, torch.Generator().manual_seed(0))
    rows = [time_setting(codebook_model, batch, name, args) for name in SETTINGS]
    base = rows[0]
    for row in rows:
        row["below_speedup"] = base["below_s"] / row["below_s"]
        row["step_speedup"] = base["step_s"] / row["step_s"]
        row["stage_750_s"] = 750 * (row["below_s"] + row["step_s"])
    print(
        f"training work per batch, {args.shape}, batch {args.batch}x{args.seq}, layer {shape.layer}, "
        f"C={args.n_codes[0]}, k={args.top_k}, {device_name(device)}; train.precision=auto trains in "
        f"{'bf16' if trains_in_bf16(device) else 'fp32'} here"
    )
    print_table(rows, ["setting", "below_s", "step_s", "below_speedup", "step_speedup", "stage_750_s"])
    write_json("precision", args, device, {"results": rows, "auto_bf16": trains_in_bf16(device)})


if __name__ == "__main__":
    main()
