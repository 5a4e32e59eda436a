"""Weight quantization as an attack on unlearning: does a forgotten topic come back at low precision?

Gradient unlearning moves weights by small amounts that rounding can undo (Zhang et al. 2024,
"Catastrophic failure of LLM unlearning via quantization"); a mask removes codes from the choice and
should survive any rounding of the weights. `fake_quantize_` rounds every linear layer's weights in
place to `bits` bits, symmetric round-to-nearest per group of `group_size` input weights of each
output row (the weight-only scheme of common int8/int4 deployments), then stores them dequantized, so
any platform can evaluate the quantized model with its usual kernels.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn


@torch.no_grad()
def quantize_weight(weight: torch.Tensor, bits: int, group_size: int) -> torch.Tensor:
    """`weight` (out, in) rounded to `bits`-bit integers per group of `group_size` inputs, dequantized."""
    if not 2 <= bits <= 16:
        raise ValueError(f"bits={bits}: use 2 to 16")
    out_features, in_features = weight.shape
    group = group_size if group_size and in_features % group_size == 0 else in_features
    grouped = weight.float().reshape(out_features, in_features // group, group)
    levels = 2 ** (bits - 1) - 1
    scale = grouped.abs().amax(dim=-1, keepdim=True).clamp(min=1e-12) / levels
    quantized = (grouped / scale).round().clamp(-levels - 1, levels)
    return (quantized * scale).reshape(out_features, in_features).to(weight.dtype)


@torch.no_grad()
def fake_quantize_(model: nn.Module, bits: int, group_size: int = 128) -> int:
    """Round every nn.Linear weight of `model` in place; returns how many layers were quantized.

    Embeddings stay in full precision, as weight-only schemes keep them; a head tied to the embedding
    is left alone with it."""
    embedding = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    tied = embedding.weight if embedding is not None else None
    count = 0
    for module in model.modules():
        if isinstance(module, nn.Linear) and module.weight is not tied:
            module.weight.copy_(quantize_weight(module.weight, bits, group_size))
            count += 1
    return count


@contextmanager
def weights_quantized(model: nn.Module, bits: int, group_size: int = 128) -> Iterator[None]:
    """Run the block with `model`'s linear weights rounded to `bits` bits; the originals come back after."""
    saved = [(m, m.weight.detach().clone()) for m in model.modules() if isinstance(m, nn.Linear)]
    fake_quantize_(model, bits, group_size)
    try:
        yield
    finally:
        with torch.no_grad():
            for module, weight in saved:
                module.weight.copy_(weight)
