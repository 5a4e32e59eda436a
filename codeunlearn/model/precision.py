"""The precision codebook training runs in: bf16 autocast where the hardware multiplies bf16 natively.

That is a CUDA GPU, or a CPU with AMX or AVX512-BF16 (oneDNN's bf16 kernels): there the layers above
the bottleneck train about 1.6x faster on the 2-core machine (docs/results/training-speed.md). Elsewhere
bf16 is emulated and slower than fp32, so those machines train in full precision. Parameters and the
optimizer state stay fp32 everywhere; only the matrix products run in bf16. Mining, evaluation and
serving do not use this: the codes a mask is mined on are the ones fp32 serving chooses.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel


@functools.cache
def _cpu_has_bf16_units() -> bool:
    return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def trains_in_bf16(device: torch.device | str, precision: str = "auto") -> bool:
    """Whether training runs under bf16 autocast: `precision` (train.precision) says so, or, for
    "auto", the device multiplies bf16 natively."""
    if precision != "auto":
        return precision == "bf16"
    device_type = torch.device(device).type
    return device_type == "cuda" or (device_type == "cpu" and _cpu_has_bf16_units())


@contextlib.contextmanager
def training_precision(device: torch.device | str, precision: str = "auto") -> Iterator[None]:
    """bf16 autocast where `trains_in_bf16` says so (a no-op elsewhere).

    On a CPU, attention takes the plain-math kernel: the CPU flash-attention kernel's bf16 backward
    is about 8x slower than its fp32 one, which cost most of what bf16 gained.
    """
    device_type = torch.device(device).type
    enabled = trains_in_bf16(device, precision)
    with contextlib.ExitStack() as stack:
        stack.enter_context(torch.autocast(device_type, dtype=torch.bfloat16, enabled=enabled))
        if enabled and device_type == "cpu":
            stack.enter_context(sdpa_kernel(SDPBackend.MATH))
        yield
