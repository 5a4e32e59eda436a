"""PNG plots of a run: the forget/retain trade-off across S', code usage, and per-topic damage.

Each function takes plain numbers and returns a matplotlib Figure (Agg backend, no display needed);
the caller saves it or logs it to MLflow and closes it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def sweep_frontier(sweep: Sequence[Mapping[str, float]]):
    """Forget drop against retain NLL change for mined and random masks, one point per S'."""
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(6, 4.5))
    for kind, marker in (("mined", "o-"), ("random", "s--")):
        x = [row[f"{kind}_retain_delta"] for row in sweep]
        y = [row[f"{kind}_forget_drop"] for row in sweep]
        axis.plot(x, y, marker, label=f"{kind} codes")
        for row, xi, yi in zip(sweep, x, y, strict=True):
            axis.annotate(
                f"S'={int(row['n_select'])}", (xi, yi), fontsize=7, xytext=(3, 3), textcoords="offset points"
            )
    axis.set_xlabel("retain NLL change over the codebook model (nats/token)")
    axis.set_ylabel("normalised forget drop (1 = base model)")
    axis.set_title("Forget vs retain across S'")
    axis.axhline(1.0, color="grey", linewidth=0.5)
    axis.legend()
    figure.tight_layout()
    return figure


def code_usage(token_counts: Mapping[str, np.ndarray], masked: Sequence[int] = ()):
    """Histogram of how often each code fires per split, on a log scale; masked codes marked."""
    plt = _pyplot()
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for split, counts in token_counts.items():
        counts = np.asarray(counts)
        left.hist(np.log10(counts + 1), bins=40, histtype="step", label=split)
        right.plot(np.sort(counts)[::-1] / max(counts.sum(), 1), label=split)
    left.set_xlabel("log10(firings + 1)")
    left.set_ylabel("codes")
    left.set_title(f"Code usage ({len(next(iter(token_counts.values())))} codes)")
    left.legend()
    right.set_yscale("log")
    right.set_xlabel("code rank")
    right.set_ylabel("share of firings")
    right.set_title("Rank-frequency")
    if masked:
        first = next(iter(token_counts.values()))
        shares = np.asarray(first)[list(masked)] / max(np.asarray(first).sum(), 1)
        left.text(
            0.98,
            0.95,
            f"{len(masked)} masked codes: {shares.sum():.1%} of firings",
            transform=left.transAxes,
            ha="right",
            va="top",
            fontsize=8,
        )
    right.legend()
    figure.tight_layout()
    return figure


def topic_damage(deltas: Mapping[str, float], forget_delta: float | None = None):
    """Bars of the NLL change each retained topic suffers under the mask (the forget topic in red)."""
    plt = _pyplot()
    names = sorted(deltas, key=deltas.get)
    values = [deltas[name] for name in names]
    if forget_delta is not None:
        names.append("FORGET")
        values.append(forget_delta)
    figure, axis = plt.subplots(figsize=(7, max(3, 0.22 * len(names) + 1)))
    colors = ["tab:red" if name == "FORGET" else "tab:blue" for name in names]
    axis.barh(names, values, color=colors)
    axis.axvline(0, color="black", linewidth=0.5)
    axis.set_xlabel("NLL change over the codebook model (nats/token)")
    axis.set_title("Collateral damage per retained topic")
    axis.tick_params(axis="y", labelsize=7)
    figure.tight_layout()
    return figure


def ablation_frontier(rows: Sequence[Mapping[str, object]]):
    """Forget drop against retain NLL change, one point per ablation variant, one colour per axis."""
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(6.5, 4.5))
    for name in dict.fromkeys(str(row["axis"]) for row in rows):
        points = [row for row in rows if row["axis"] == name]
        x = [float(row["retain_delta"]) for row in points]
        y = [float(row["forget_drop"]) for row in points]
        axis.plot(x, y, "o", label=name)
        for row, xi, yi in zip(points, x, y, strict=True):
            axis.annotate(str(row["value"]), (xi, yi), fontsize=7, xytext=(3, 3), textcoords="offset points")
    axis.set_xlabel("retain NLL change over the codebook model (nats/token)")
    axis.set_ylabel("normalised forget drop (1 = base model)")
    axis.set_title("Ablations: forget vs retain")
    axis.axhline(1.0, color="grey", linewidth=0.5)
    axis.legend(fontsize=7)
    figure.tight_layout()
    return figure


def scores_frontier(points: Mapping[str, tuple[float, float]]):
    """Forget drop against retain drop, one labelled point per unlearning method."""
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(6, 4.5))
    for name, (retain_drop, forget_drop) in points.items():
        axis.plot([retain_drop], [forget_drop], "o")
        axis.annotate(name, (retain_drop, forget_drop), fontsize=7, xytext=(3, 3), textcoords="offset points")
    # Gradient baselines can overshoot by orders of magnitude; a log-like scale keeps masks visible.
    if max((abs(v) for point in points.values() for v in point), default=0.0) > 5:
        axis.set_xscale("symlog", linthresh=0.1)
        axis.set_yscale("symlog", linthresh=1.0)
    axis.set_xlabel("normalised retain drop (lower is better)")
    axis.set_ylabel("normalised forget drop (1 = base model)")
    axis.set_title("Forget/retain frontier per method")
    figure.tight_layout()
    return figure


def relearning_curves(curves: Mapping[str, Sequence[Mapping[str, float]]]):
    """Forget NLL after N relearning steps, one line per method."""
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(6, 4.5))
    for name, points in curves.items():
        axis.plot([p["steps"] for p in points], [p["forget_nll"] for p in points], "o-", label=name)
    axis.set_xlabel("relearning steps N")
    axis.set_ylabel("held-out forget NLL (nats/token)")
    axis.set_title("Relearning attack")
    axis.legend(fontsize=7)
    figure.tight_layout()
    return figure


def collateral_scatter(points: Mapping[str, tuple[float, float]]):
    """Measured NLL change of each retained topic against the share of its code firings the mask
    disables (the prediction known before the mask is applied)."""
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(6.5, 4.5))
    for name, (share, delta) in points.items():
        axis.plot([100 * share], [delta], "o", color="tab:blue")
        axis.annotate(name, (100 * share, delta), fontsize=6, xytext=(3, 2), textcoords="offset points")
    axis.axhline(0, color="black", linewidth=0.5)
    axis.set_xlabel("share of the topic's code firings that the mask disables (%)")
    axis.set_ylabel("measured NLL change (nats/token)")
    axis.set_title("Collateral damage: predicted vs measured")
    figure.tight_layout()
    return figure
