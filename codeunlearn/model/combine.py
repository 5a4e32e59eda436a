"""How a token's chosen codes become one vector (their mean, or the least-squares fit of the token
onto them), and orthogonal matching pursuit, which chooses the codes for that fit.

Shapes: n tokens, C codes, k codes chosen per token, e code width.
"""

from __future__ import annotations

import torch


def combine_mean(chosen: torch.Tensor, h: torch.Tensor, kept: torch.Tensor | None = None) -> torch.Tensor:
    """The chosen codes' mean (Codebook Features, the paper). chosen (..., k, e), h (..., e), kept
    (..., k) bool or None: a slot not kept (a masked code under the `zero` policy) adds nothing.

    Straight-through: the value is the mean, the gradient also reaches h (so the layers below learn)
    as if code selection were the identity.
    """
    if kept is not None:
        chosen = chosen * kept.unsqueeze(-1).to(chosen.dtype)
    return chosen.mean(dim=-2) + (h - h.detach())


def least_squares_weights(basis: torch.Tensor, h: torch.Tensor, ridge: float = 1e-4) -> torch.Tensor:
    """Weights w minimising ||h - w @ basis||^2 + ridge ||w||^2. basis (..., k, e), h (..., e) -> (..., k)"""
    # A k x k solve is not defined in bf16, so this runs in fp32 even under autocast.
    with torch.autocast(h.device.type, enabled=False):
        basis = basis.float()
        gram = basis @ basis.transpose(-1, -2)  # (..., k, k)
        eye = torch.eye(gram.shape[-1], dtype=gram.dtype, device=gram.device)
        return torch.linalg.solve(gram + ridge * eye, basis @ h.float().unsqueeze(-1)).squeeze(-1)


def combine_projection(
    chosen: torch.Tensor, h: torch.Tensor, kept: torch.Tensor | None = None
) -> torch.Tensor:
    """h projected onto the span of its chosen codes (least squares), then the terms of the slots not
    kept dropped. chosen (..., k, e), h (..., e), kept (..., k) bool or None.

    The weights are fitted with every chosen code and only then is a masked code's term removed: a
    refit would let the kept codes take over the masked code's direction, which is what a mask must
    stop. Differentiable in both h and the codes, so no straight-through term is needed.
    """
    weights = least_squares_weights(chosen, h)  # (..., k)
    if kept is not None:
        weights = weights * kept.to(weights.dtype)
    return (weights.unsqueeze(-1) * chosen.float()).sum(dim=-2).to(h.dtype)


# "pursuit" chooses its codes by orthogonal matching pursuit (see `pursuit`); its output is the same
# least-squares fit as "projection".
COMBINATIONS = {"mean": combine_mean, "projection": combine_projection, "pursuit": combine_projection}


def pursuit(
    units: torch.Tensor, codes: torch.Tensor, excluded: torch.Tensor | None, top_k: int
) -> torch.Tensor:
    """Orthogonal matching pursuit: top_k codes chosen one at a time, each the code most aligned
    (either sign) with what the codes chosen so far leave unexplained (the residual of their
    least-squares fit).

    Top-k by cosine picks k near-duplicates of the input's nearest code; pursuit picks codes that
    explain different parts of it, so the same k codes rebuild the input more closely
    (bench/bench_bottleneck_fidelity.py). Codes of either sign count: on SmolLM2's layer 20, choosing
    only positively aligned codes stopped improving past k = 8 (relative error 0.133 at k = 8, 0.123 at
    32, against 0.129 and 0.074 with both signs).

    Args:
        units: (n, e) unit vectors; codes: (C, e) unit codes; excluded: (C,) bool or None.
    Returns:
        (n, top_k) int64 code ids in the order chosen. Memory: one (n, C) score matrix at a time.
    """
    ids = torch.empty((units.shape[0], 0), dtype=torch.long, device=units.device)
    residual = units
    for _ in range(top_k):
        scores = (residual @ codes.T).abs()  # (n, C)
        if excluded is not None:
            scores.masked_fill_(excluded, float("-inf"))
        scores.scatter_(1, ids, float("-inf"))  # each code at most once
        ids = torch.cat([ids, scores.argmax(dim=-1, keepdim=True)], dim=1)  # (n, j)
        basis = codes[ids]  # (n, j, e)
        residual = units - (least_squares_weights(basis, units).unsqueeze(-1) * basis).sum(dim=-2)
    return ids
