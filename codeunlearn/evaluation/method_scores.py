"""One unlearning method's scores on a request (masking or a gradient baseline), and their tables."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from codeunlearn.core.serialization import without_nan


@dataclass
class MethodScore:
    method: str
    forget_nll: float
    retain_nll: float
    forget_drop: float
    retain_drop: float
    mia_auc_loss: float
    mia_auc_min_k: float
    wall_clock_s: float  # answering the request: mining + masking, or the gradient run
    flops: float = float("nan")
    forget_examples: int = 0
    relearning: list[dict[str, float]] = field(default_factory=list)  # steps, forget_nll, recovery
    quantized: list[dict[str, float]] = field(default_factory=list)  # bits, forget/retain NLL and drop


def render(scores: list[MethodScore]) -> str:
    lines = [
        "| method | forget NLL | retain NLL | forget drop | retain drop | MIA AUC (loss) "
        "| MIA AUC (min-k 20%) | wall-clock s | FLOPs |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for s in scores:
        lines.append(
            f"| {s.method} | {s.forget_nll:.4f} | {s.retain_nll:.4f} | {s.forget_drop:.3f} "
            f"| {s.retain_drop:.3f} | {s.mia_auc_loss:.3f} | {s.mia_auc_min_k:.3f} | {s.wall_clock_s:.1f} "
            f"| {s.flops:.2e} |"
        )
    return "\n".join(lines)


def render_relearning(scores: list[MethodScore]) -> str:
    """Forget NLL (and recovery toward the codebook model) after N relearning steps, per method."""
    attacked = [s for s in scores if s.relearning]
    if not attacked:
        return ""
    steps = [int(p["steps"]) for p in attacked[0].relearning]
    lines = ["| method | " + " | ".join(f"N={n}" for n in steps) + " |", "|---" * (1 + len(steps)) + "|"]
    for s in attacked:
        cells = [
            f"{p['forget_nll']:.3f}" + ("" if np.isnan(p["recovery"]) else f" ({p['recovery']:.0%})")
            for p in s.relearning
        ]
        lines.append(f"| {s.method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def render_quantized(scores: list[MethodScore]) -> str:
    """Forget and retain drop of every method at full precision and with rounded weights."""
    rounded = [s for s in scores if s.quantized]
    if not rounded:
        return ""
    widths = [int(q["bits"]) for q in rounded[0].quantized]
    header = "| method | full precision | " + " | ".join(f"int{b} weights" for b in widths) + " |"
    lines = [header, "|---" * (2 + len(widths)) + "|"]
    for s in rounded:
        cells = [f"{s.forget_drop:.3f} / {s.retain_drop:.3f}"]
        cells += [f"{q['forget_drop']:.3f} / {q['retain_drop']:.3f}" for q in s.quantized]
        lines.append(f"| {s.method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def to_json(scores: list[MethodScore]) -> list[dict]:
    """The scores as JSON-safe dicts: NaN (unknown or undefined) becomes null."""
    return [without_nan(asdict(score)) for score in scores]
