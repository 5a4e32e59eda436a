"""Where the model's matrix products run in bf16: the one switch training and mining share.

bf16 autocast is used only where the hardware multiplies bf16 matrices natively: a CUDA GPU, or a CPU
with AMX or AVX512-BF16 (oneDNN's bf16 kernels). Elsewhere bf16 is emulated and slower than fp32,
so those machines stay in full precision. Evaluation never autocasts: its NLLs are fp32 figures.
"""

from __future__ import annotations

import functools

import torch


@functools.cache
def _cpu_has_bf16_units() -> bool:
    return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def uses_bf16(device: torch.device | str) -> bool:
    """True where bf16 autocast speeds up this device's matrix products."""
    device_type = torch.device(device).type
    return device_type == "cuda" or (device_type == "cpu" and _cpu_has_bf16_units())


def bf16_autocast(device: torch.device | str) -> torch.autocast:
    """bf16 autocast on a device that multiplies bf16 natively; a no-op context elsewhere."""
    device_type = torch.device(device).type
    return torch.autocast(device_type, dtype=torch.bfloat16, enabled=uses_bf16(device))
