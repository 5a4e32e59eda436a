"""The run's PNG plots render from plain numbers."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from codeunlearn.evaluation import plots

PNG = b"\x89PNG\r\n\x1a\n"


def save(figure, path: Path) -> bytes:
    import matplotlib.pyplot as plt

    figure.savefig(path)
    plt.close(figure)
    return path.read_bytes()


def test_each_plot_writes_a_png(tmp_path: Path):
    sweep = [
        {
            "n_select": n,
            "mined_forget_drop": d,
            "mined_retain_delta": r,
            "random_forget_drop": 0.01,
            "random_retain_delta": 0.001,
        }
        for n, d, r in ((64, 0.5, 0.001), (128, 0.8, 0.004))
    ]
    rng = np.random.default_rng(0)
    usage = {"forget": rng.integers(0, 50, 64), "control": rng.integers(0, 50, 64)}
    figures = {
        "sweep": plots.sweep_frontier(sweep),
        "usage": plots.code_usage(usage, masked=[1, 2, 3]),
        "damage": plots.topic_damage({"noun.animal": 0.01, "noun.plant": -0.002}, forget_delta=0.7),
    }
    for name, figure in figures.items():
        assert save(figure, tmp_path / f"{name}.png")[:8] == PNG
    damage_labels = [t.get_text() for t in figures["damage"].axes[0].get_yticklabels()]
    assert damage_labels == ["noun.plant", "noun.animal", "FORGET"]  # sorted by damage, forget last
