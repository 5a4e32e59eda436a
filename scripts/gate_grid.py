"""Forget/retain drop of gated zero-policy masks over a grid of gates and mask sizes, on a trained run.

Usage: python3 scripts/gate_grid.py [CONFIG] --grid "5:256,320,384;4:256" [--base-report PATH] [overrides...]
(default configs/pursuit.yaml; needs `codeunlearn run` on that config first, or `codeunlearn mine` on a
run directory holding a trained model, with --base-report naming a report.json of the same held-out
splits for the base model's NLL).

Each grid entry is GATE[,CONTEXT_GATE[,AFTER]]:S',S',...; the codes are the first S' of the run's
enrichment order (mining/selected.json's ranked_eligible). The layers below the bottleneck run once;
each cell is one scoring of the held-out forget and retain splits under the zero policy with
`bottleneck.mask_gate=GATE` (and `mask_context_gate=CONTEXT_GATE`, `mask_context_after=AFTER`,
default 0 and 1), as `codeunlearn run -c CONFIG bottleneck.mask_gate=GATE ... mining.n_select=S'`
would score it.
Prints one line per cell: forget drop (1 = base model), keyword-free drop, retain Δ in nats over the
codebook model, and the three retained topics that rise most.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from codeunlearn.core.config import load_config
from codeunlearn.core.paths import open_run
from codeunlearn.data.topics import read_splits
from codeunlearn.evaluation.evaluator import Evaluator, normalized_drop
from codeunlearn.evaluation.sets import eval_sets_of
from codeunlearn.model.loading import load_model
from codeunlearn.model.surgery import CodebookModel
from codeunlearn.unlearning.masks import mask_from_codes


def parse_grid(grid: str) -> list[tuple[tuple[int, int, int], list[int]]]:
    """ "5:256,320;6,3:288" -> [((5, 0, 1), [256, 320]), ((6, 3, 1), [288])]"""
    cells = []
    for entry in grid.split(";"):
        gates, sizes = entry.split(":")
        given = [int(value) for value in gates.split(",")]
        gate, context_gate, after = (given + [0, 1][len(given) - 1 :])[:3]
        cells.append(((gate, context_gate, after), [int(size) for size in sizes.split(",")]))
    return cells


@dataclass
class GridRun:
    """A trained run ready to score masks: the layers below the bottleneck are computed once."""

    model: CodebookModel
    evaluator: Evaluator
    ranked: list[int]  # the run's codes in enrichment order
    base: dict[str, float]  # the base model's held-out NLL
    codebook: dict[str, float]  # the unmasked codebook model's

    @classmethod
    def load(cls, config, base_report: Path | None) -> GridRun:
        """`base_report` None: the run's own eval/report.json."""
        torch.set_num_threads(int(config.model.threads or 1))
        run_dir = Path(config.run_dir)
        ranked = json.loads((run_dir / "mining" / "selected.json").read_text())["ranked_eligible"]
        base = json.loads((base_report or run_dir / "eval" / "report.json").read_text())["nll"]["base"]
        model = load_model(config)
        sets = eval_sets_of(
            read_splits(open_run(config).splits_dir),
            model.tokenizer,
            config.data.max_length,
            config.eval.batch_size,
        )
        evaluator = Evaluator(model, sets)
        return cls(model, evaluator, ranked, base, evaluator.score_codebook(None))

    def score(self, size: int) -> str:
        """The first `size` ranked codes masked under the bottleneck's current policy: forget and
        keyword-free drops, retain rise and the three retained topics that rise most, timed."""
        started = time.perf_counter()
        codes = self.ranked[:size]
        masked = self.evaluator.score_codebook(mask_from_codes(self.model.bottleneck.n_codes, "grid", codes))
        base, codebook = self.base, self.codebook
        drop = normalized_drop(base["forget"], codebook["forget"], masked["forget"])
        free = normalized_drop(
            base["forget_keyword_free"], codebook["forget_keyword_free"], masked["forget_keyword_free"]
        )
        topics = [k for k in masked if k.startswith("retain:")]
        rises = sorted(((masked[k] - codebook[k], k[len("retain:") :]) for k in topics), reverse=True)
        worst = ", ".join(f"{topic} +{rise:.3f}" for rise, topic in rises[:3])
        return (
            f"S'={len(codes)}: forget drop {drop:.3f} keyword-free {free:.3f} "
            f"retain +{masked['retain'] - codebook['retain']:.4f} | {worst} "
            f"({time.perf_counter() - started:.0f} s)"
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("config", nargs="?", default="configs/pursuit.yaml")
    parser.add_argument(
        "--grid", required=True, help="GATE[,CONTEXT_GATE[,AFTER]]:S',S',...;... e.g. \"5:256,320;6,3:288\""
    )
    parser.add_argument("--base-report", type=Path, help="report.json with the base model's NLL")
    args, overrides = parser.parse_known_args()
    run = GridRun.load(load_config(Path(args.config), overrides), args.base_report)
    print(
        f"{len(run.ranked)} codes eligible; codebook forget {run.codebook['forget']:.4f} "
        f"retain {run.codebook['retain']:.4f}"
    )
    for (gate, context_gate, after), sizes in parse_grid(args.grid):
        bottleneck = run.model.bottleneck
        bottleneck.serve(
            replace(
                bottleneck.policy,
                mask_policy="zero",
                mask_gate=gate,
                mask_context_gate=context_gate,
                mask_context_after=after,
                mask_condition="none",
            )
        )
        label = f"gate {gate}" + (f", then {context_gate} after {after} gated" if context_gate else "")
        for size in sizes:
            print(f"{label} {run.score(size)}", flush=True)


if __name__ == "__main__":
    main()
