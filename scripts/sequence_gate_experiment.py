"""Experiment: a sequence-level mask gate, scored on a trained run's held-out splits. Not a shipped policy.

Usage: python3 scripts/sequence_gate_experiment.py [CONFIG] --specs "6,3,1:256,288;5,3,1:256"
                                                   [--base-report PATH] [overrides...]
(default configs/pursuit.yaml; needs `codeunlearn run` on that config first.)

`bottleneck.mask_gate=G` drops a token's masked codes where at least G of its k codes are masked. This
experiment adds a second, lower gate: at a token that follows at least N tokens of the same sequence
gated at G, the masked codes drop where at least G_lo of its k codes are masked. Once a text has shown
itself to be about the topic, its weaker topic tokens go too; a neighbour's text that brushes the topic
at one token is left as the single gate leaves it. Each spec is G,G_lo,N:S',S',... with the first S'
codes of the run's enrichment order.

It replaces `CodebookBottleneck._dropped` for whole sequences only (the Evaluator's forward); cached
decoding would need the count of gated tokens carried from step to step, which the library does not
do yet. Prints one line per cell as scripts/gate_grid.py does (its GridRun scores each cell).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from gate_grid import GridRun  # scripts/ is on sys.path when run as a script

from codeunlearn import bottleneck as bn
from codeunlearn.config import load_config

CONTEXT = {"low_gate": 0, "after": 1}  # set per spec; low_gate 0 leaves the plain gate


def sequence_dropped(self: bn.CodebookBottleneck, ids: torch.Tensor) -> torch.Tensor:
    """`_dropped` with the second gate: ids (B, T, k) over whole sequences."""
    masked = self.mask[ids]
    hits = masked.sum(dim=-1)  # (..., T)
    gated = hits >= self.config.mask_gate
    if ids.dim() == 3 and CONTEXT["low_gate"]:
        earlier = torch.cumsum(gated.int(), dim=1) - gated.int()  # gated tokens before each token
        gated = gated | ((earlier >= CONTEXT["after"]) & (hits >= CONTEXT["low_gate"]))
    return masked & gated.unsqueeze(-1)


def parse_specs(specs: str) -> list[tuple[int, int, int, list[int]]]:
    """ "6,3,1:256,288" -> [(6, 3, 1, [256, 288])]"""
    cells = []
    for entry in specs.split(";"):
        head, sizes = entry.split(":")
        gate, low_gate, after = (int(value) for value in head.split(","))
        cells.append((gate, low_gate, after, [int(size) for size in sizes.split(",")]))
    return cells


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("config", nargs="?", default="configs/pursuit.yaml")
    parser.add_argument("--specs", required=True, help="G,G_lo,N:S',S',...;... e.g. 6,3,1:256,288")
    parser.add_argument("--base-report", type=Path, help="report.json with the base model's NLL")
    args, overrides = parser.parse_known_args()
    bn.CodebookBottleneck._dropped = sequence_dropped
    run = GridRun.load(load_config(Path(args.config), overrides), args.base_report)
    for gate, low_gate, after, sizes in parse_specs(args.specs):
        run.model.bottleneck.set_mask_policy("zero", gate)
        CONTEXT.update(low_gate=low_gate, after=after)
        for size in sizes:
            print(f"gate {gate}, then {low_gate} after {after} gated, {run.score(size)}", flush=True)


if __name__ == "__main__":
    main()
