"""Forget/retain drop of gated zero-policy masks over a grid of gates and mask sizes, on a trained run.

Usage: python3 scripts/gate_grid.py [CONFIG] --grid "5:256,320,384;4:256" [--base-report PATH] [overrides...]
(default configs/pursuit.yaml; needs `codeunlearn run` on that config first, or `codeunlearn mine` on a
run directory holding a trained model, with --base-report naming a report.json of the same held-out
splits for the base model's NLL).

Each grid entry is GATE:S',S',...; the codes are the first S' of the run's enrichment order
(mining/selected.json's ranked_eligible). The layers below the bottleneck run once; each cell is one
scoring of the held-out forget and retain splits under `bottleneck.mask_gate=GATE` with the zero
policy, as `codeunlearn run -c CONFIG bottleneck.mask_gate=GATE mining.n_select=S'` would score it.
Prints one line per cell: forget drop (1 = base model), keyword-free drop, retain Δ in nats over the
codebook model, and the three retained topics that rise most.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from codeunlearn.config import load_config
from codeunlearn.evaluation import Evaluator, normalized_drop
from codeunlearn.masks import mask_from_codes
from codeunlearn.pipeline import evaluation_sets, load_model


def parse_grid(grid: str) -> list[tuple[int, list[int]]]:
    """ "5:256,320;4:256" -> [(5, [256, 320]), (4, [256])]"""
    cells = []
    for entry in grid.split(";"):
        gate, sizes = entry.split(":")
        cells.append((int(gate), [int(size) for size in sizes.split(",")]))
    return cells


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("config", nargs="?", default="configs/pursuit.yaml")
    parser.add_argument("--grid", required=True, help="GATE:S',S',...;GATE:... e.g. \"5:256,320;4:256\"")
    parser.add_argument("--base-report", type=Path, help="report.json with the base model's NLL")
    args, overrides = parser.parse_known_args()
    config = load_config(Path(args.config), overrides)
    torch.set_num_threads(int(config.model.threads or 1))
    run_dir = Path(config.run_dir)
    ranked = json.loads((run_dir / "mining" / "selected.json").read_text())["ranked_eligible"]
    base_report = args.base_report or run_dir / "eval" / "report.json"
    base = json.loads(base_report.read_text())["nll"]["base"]
    model = load_model(config)
    n_codes = model.bottleneck.n_codes
    evaluator = Evaluator(model, evaluation_sets(config, model.tokenizer))
    codebook = evaluator.score_codebook(None)
    print(
        f"{len(ranked)} codes eligible; codebook forget {codebook['forget']:.4f} "
        f"retain {codebook['retain']:.4f}"
    )
    for gate, sizes in parse_grid(args.grid):
        model.bottleneck.set_mask_policy("zero", gate)
        for size in sizes:
            started = time.perf_counter()
            masked = evaluator.score_codebook(mask_from_codes(n_codes, "grid", ranked[:size]))
            drop = normalized_drop(base["forget"], codebook["forget"], masked["forget"])
            free = normalized_drop(
                base["forget_keyword_free"], codebook["forget_keyword_free"], masked["forget_keyword_free"]
            )
            topics = [k for k in masked if k.startswith("retain:")]
            rises = sorted(((masked[k] - codebook[k], k[len("retain:") :]) for k in topics), reverse=True)
            worst = ", ".join(f"{topic} +{rise:.3f}" for rise, topic in rises[:3])
            print(
                f"gate {gate} S'={min(size, len(ranked))}: forget drop {drop:.3f} keyword-free {free:.3f} "
                f"retain +{masked['retain'] - codebook['retain']:.4f} | {worst} "
                f"({time.perf_counter() - started:.0f} s)",
                flush=True,
            )


if __name__ == "__main__":
    main()
