"""Benchmark: per-request cost of mask-based unlearning vs one NPO run, same model, same forget set.

A request is answered by: mining the forget set (`count_codes`, layers up to the bottleneck only),
selecting codes against control statistics computed once and reused by every request (`select_codes`),
building the mask and putting it in force (`mask_from_codes`, `apply_mask`). Registering the mask
version is MLflow (`Tracker.register_mask`), timed separately when mlflow is importable, else skipped.
The baseline is one NPO+RT run (codeunlearn.baselines.npo, 10 epochs, lr 1e-5, batch 8) on the base model
(bottleneck bypassed) over the same forget examples, with as many retain examples.

Forget, control and retain examples are random token ids from three vocabulary ranges, so a topic's
codes exist to be found; codes start from sampled activations as `train` initialises them.

    python bench/bench_request.py                          # CPU, small shape
    python bench/bench_request.py --shape smollm2-135m     # CUDA
"""

from __future__ import annotations

import importlib.util
import tempfile
import time
from pathlib import Path

import torch
from common import (
    SHAPES,
    base_parser,
    build_model,
    device_name,
    print_table,
    random_batch,
    resolve_device,
    sync,
    timed,
    with_bottleneck,
    write_json,
)

from codeunlearn.baselines.registry import unlearn_with_gradients
from codeunlearn.core.config import BaselineConfig, MiningConfig
from codeunlearn.core.errors import CodeunlearnError
from codeunlearn.model.code_init import sample_codes
from codeunlearn.model.surgery import CodebookModel, bypassed, forward_to_site
from codeunlearn.unlearning.masks import Mask, apply_mask, mask_from_codes
from codeunlearn.unlearning.mining import count_codes
from codeunlearn.unlearning.selection import CodeCounts, select_codes


def example_batches(
    shape, n_examples: int, seq: int, batch_size: int, vocab_range: tuple[int, int], seed: int
):
    generator = torch.Generator().manual_seed(seed)
    sizes = [min(batch_size, n_examples - start) for start in range(0, n_examples, batch_size)]
    return [random_batch(shape, rows, seq, generator, *vocab_range) for rows in sizes]


@torch.no_grad()
def init_codes_from(codebook_model: CodebookModel, batches, seed: int) -> None:
    """Codes sampled from real activations at the site, as `train(init="sample")` starts them."""
    bottleneck = codebook_model.bottleneck
    device = codebook_model.device
    with bypassed(codebook_model):
        hidden = [
            forward_to_site(codebook_model, b.input_ids.to(device), b.attention_mask.to(device))[0]
            for b in batches
        ]
    samples = torch.cat([h[:, 1:].reshape(-1, h.shape[-1]) for h in hidden]).float()
    codes = sample_codes(samples.cpu(), bottleneck.n_codes, torch.Generator().manual_seed(seed))
    bottleneck.reset_codes(torch.arange(bottleneck.n_codes), codes.to(device))


def answer_request(
    codebook_model: CodebookModel, forget_batches, control: CodeCounts, config: MiningConfig
) -> Mask:
    """Mine the forget set, select against the reused control counts, build and apply the mask."""
    forget = count_codes(codebook_model, forget_batches, desc="mining forget")
    try:
        selected = select_codes(forget, control, config)
    except CodeunlearnError:  # random weights: fall back to the top codes by enrichment alone
        selected = select_codes(
            forget,
            control,
            MiningConfig(n_select=config.n_select, min_count=1, max_p_value=1.0, min_enrichment=1.0),
        )
    mask = mask_from_codes(codebook_model.bottleneck.n_codes, "req-bench", selected.code_ids.tolist())
    apply_mask(codebook_model, mask)
    sync(codebook_model.device)
    return mask


def time_register(mask: Mask) -> tuple[float | None, str]:
    """Seconds to register the mask version in a fresh MLflow SQLite store (warm: the second of two)."""
    if importlib.util.find_spec("mlflow") is None:
        return None, "mlflow not importable here: registering not measured"
    from codeunlearn.core.config import RunConfig, TrackingConfig
    from codeunlearn.tracking.tracker import Tracker

    with tempfile.TemporaryDirectory(prefix="bench_request_") as state:
        tracker = Tracker(RunConfig(tracking=TrackingConfig(state_dir=str(Path(state)))))
        with tracker.run("bench-request", log_config=False) as run_id:
            tracker.register_mask(mask, "1", "bench:warmup", {}, run_id)  # store migrations, first model
            started = time.perf_counter()
            tracker.register_mask(mask, "1", "bench:request", {}, run_id)
            return time.perf_counter() - started, "MLflow SQLite store in a temporary directory, warm"


def main() -> None:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--forget-examples", type=int, default=0, help="0: 64 on CPU, 256 on CUDA")
    parser.add_argument("--epochs", type=int, default=10, help="NPO epochs over the forget set")
    parser.add_argument("--n-select", type=int, default=192)
    args = parser.parse_args()
    device, shape = resolve_device(args.device), SHAPES[args.shape]
    on_cuda = device.type == "cuda"
    n_examples = args.forget_examples or (256 if on_cuda else 64)
    seq = args.seq or (128 if on_cuda else 32)
    n_codes = (args.n_codes or shape.n_codes)[0]
    third = (shape.vocab - 3) // 3
    forget_batches = example_batches(shape, n_examples, seq, 32, (3, 3 + third), seed=1)
    control_batches = example_batches(shape, n_examples, seq, 32, (3 + third, 3 + 2 * third), seed=2)
    retain_batches = example_batches(shape, n_examples, seq, 8, (3 + 2 * third, shape.vocab), seed=3)
    model = build_model(shape, device)
    codebook_model = with_bottleneck(model, shape, n_codes, args)
    init_codes_from(codebook_model, control_batches + retain_batches[:8], seed=0)
    config = MiningConfig(n_select=args.n_select)

    started = time.perf_counter()
    control = count_codes(codebook_model, control_batches, desc="mining control")
    control_s = time.perf_counter() - started
    request_s = timed(
        lambda: (
            apply_mask(codebook_model, None),
            answer_request(codebook_model, forget_batches, control, config),
        ),
        device,
        args.warmup,
        args.repeats,
    )
    mask = answer_request(codebook_model, forget_batches, control, config)
    register_s, register_note = time_register(mask)
    apply_mask(codebook_model, None)

    npo_forget = example_batches(shape, n_examples, seq, 8, (3, 3 + third), seed=1)
    with bypassed(codebook_model):
        sync(device)
        started = time.perf_counter()
        baseline = unlearn_with_gradients(
            model, npo_forget, retain_batches, BaselineConfig(method="npo", epochs=args.epochs)
        )
        sync(device)
        npo_s = time.perf_counter() - started
    mask_total = request_s + (register_s or 0.0)
    row = {
        "n_codes": n_codes,
        "forget_tokens": n_examples * seq,
        "mask_codes": len(mask.code_ids),
        "control_once_s": control_s,
        "request_s": request_s,
        "register_s": register_s,
        "npo_s": npo_s,
        "npo_steps": baseline.steps,
        "npo_over_request": npo_s / request_s,
        "npo_over_request_with_register": npo_s / mask_total if register_s is not None else None,
    }
    print(
        f"per-request cost, {args.shape}, C={n_codes}, {n_examples} forget examples x {seq} tokens, "
        f"NPO {args.epochs} epochs, {device_name(device)}; {register_note}"
    )
    print_table(
        [row],
        [
            "request_s",
            "register_s",
            "npo_s",
            "npo_over_request",
            "npo_over_request_with_register",
            "control_once_s",
            "mask_codes",
        ],
    )
    write_json("request", args, device, {"register_note": register_note, "results": [row]})


if __name__ == "__main__":
    main()
