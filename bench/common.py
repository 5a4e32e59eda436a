"""What the model benchmarks share: model shapes, random-weight models, timing, tables, JSON.

Only torch, transformers and the codeunlearn core are imported, so every benchmark runs on the GPU
image (no prefect, mlflow, duckdb, datasets). Weights are random: FLOPs and time do not depend on them.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, installed or not

from codeunlearn.core.config import BottleneckConfig  # noqa: E402
from codeunlearn.data.batching import Batch  # noqa: E402
from codeunlearn.model.surgery import CodebookModel, insert_bottleneck  # noqa: E402


@dataclass(frozen=True)
class Shape:
    """A Llama shape, the bottleneck layer, and the default batch (rows x tokens) on this device."""

    hidden: int
    layers: int
    heads: int
    kv_heads: int
    intermediate: int
    vocab: int
    tied: bool
    layer: int  # bottleneck layer
    batch: int
    seq: int
    n_codes: tuple[int, ...]


SHAPES = {
    # CPU default: small enough for seconds per measurement on 2 cores.
    "small": Shape(128, 4, 4, 2, 256, 4096, True, 2, 4, 64, (1024, 4096)),
    # SmolLM2-135M(-Instruct): 134.5M parameters, tied embeddings; the reference batch 32 x 1024.
    "smollm2-135m": Shape(576, 30, 9, 3, 1536, 49152, True, 20, 32, 1024, (16384, 65536)),
    # Llama-3.2-1B: tied embeddings, batch 16 x 1024.
    "llama-1b": Shape(2048, 16, 32, 8, 8192, 128256, True, 10, 16, 1024, (16384, 65536)),
}


def base_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--shape", choices=sorted(SHAPES), default="small")
    parser.add_argument("--device", default="auto", help="cuda, cpu, or auto (cuda when present)")
    parser.add_argument("--batch", type=int, default=0, help="rows per batch; 0: the shape's default")
    parser.add_argument("--seq", type=int, default=0, help="tokens per row; 0: the shape's default")
    parser.add_argument("--n-codes", type=int, nargs="*", default=None, help="codebook sizes C")
    parser.add_argument("--top-k", type=int, default=8)
    parser.add_argument("--coarse-candidates", type=int, default=0, help="bottleneck.coarse_candidates")
    parser.add_argument("--chunk-tokens", type=int, default=4096, help="bottleneck.chunk_tokens")
    parser.add_argument("--chunk-codes", type=int, default=0, help="bottleneck.chunk_codes")
    parser.add_argument("--search", choices=["exact", "grouped"], default="exact", help="bottleneck.search")
    parser.add_argument("--search-probes", type=int, default=8, help="bottleneck.search_probes")
    parser.add_argument(
        "--combine", choices=["mean", "projection", "pursuit"], default="mean", help="bottleneck.combine"
    )
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats (the median is reported)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument(
        "--out", type=Path, default=None, help="JSON path (default bench/results/NAME-SHAPE.json)"
    )
    return parser


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def build_model(shape: Shape, device: torch.device, dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    """A random-weight LlamaForCausalLM of `shape`, SDPA attention, in eval mode."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=shape.vocab,
        hidden_size=shape.hidden,
        intermediate_size=shape.intermediate,
        num_hidden_layers=shape.layers,
        num_attention_heads=shape.heads,
        num_key_value_heads=shape.kv_heads,
        tie_word_embeddings=shape.tied,
        max_position_embeddings=8192,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=2,
        attn_implementation="sdpa",
    )
    with torch.device(device):
        model = LlamaForCausalLM(config)
    return model.to(dtype).eval()


def with_bottleneck(
    model: torch.nn.Module, shape: Shape, n_codes: int, args: argparse.Namespace
) -> CodebookModel:
    config = BottleneckConfig(
        layer=shape.layer,
        n_codes=n_codes,
        top_k=args.top_k,
        chunk_tokens=args.chunk_tokens,
        chunk_codes=args.chunk_codes,
        coarse_candidates=args.coarse_candidates,
        search=args.search,
        search_probes=args.search_probes,
        combine=args.combine,
    )
    return insert_bottleneck(model, None, config, "random")


def random_batch(
    shape: Shape, rows: int, seq: int, generator: torch.Generator, low: int = 3, high: int = 0
) -> Batch:
    """Full-length rows of random token ids in [low, high), BOS first."""
    ids = torch.randint(low, high or shape.vocab, (rows, seq), generator=generator)
    ids[:, 0] = 1
    return Batch(ids, torch.ones_like(ids), torch.arange(rows))


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device, warmup: int, repeats: int) -> float:
    """Median seconds per call of `fn`, the device synchronised only before and after each call."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def matmul_tflops(device: torch.device) -> float:
    """Measured dense matmul ceiling: bf16 8192^3 on CUDA, fp32 1024^3 on CPU (TFLOP/s)."""
    size, dtype = (8192, torch.bfloat16) if device.type == "cuda" else (1024, torch.float32)
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    seconds = timed(lambda: a @ b, device, warmup=3, repeats=10)
    return 2 * size**3 / seconds / 1e12


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({torch.get_num_threads()} threads, {platform.processor() or platform.machine()})"


def autocast(device: torch.device) -> torch.autocast:
    """bf16 autocast on CUDA (as training and mining run), full precision on CPU."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")


def print_table(rows: list[dict], columns: list[str]) -> None:
    widths = {c: max(len(c), *(len(_fmt(r.get(c))) for r in rows)) for c in columns}
    print("  ".join(c.ljust(widths[c]) for c in columns))
    for row in rows:
        print("  ".join(_fmt(row.get(c)).ljust(widths[c]) for c in columns))


def _fmt(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.5g}" if abs(value) < 1000 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def write_json(name: str, args: argparse.Namespace, device: torch.device, report: dict) -> Path:
    path = args.out or Path(__file__).resolve().parent / "results" / f"{name}-{args.shape}-{device.type}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "benchmark": name,
        "shape": args.shape,
        "device": device_name(device),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
    }
    path.write_text(json.dumps({**meta, **report}, indent=2, default=float) + "\n")
    print(f"wrote {path}")
    return path


def n_matmul_params(model: torch.nn.Module) -> int:
    """Parameters that take part in matrix products: all but the input embedding (counted once if tied)."""
    total = sum(p.numel() for p in model.parameters())
    if not model.config.tie_word_embeddings:
        total -= model.get_input_embeddings().weight.numel()
    return total
