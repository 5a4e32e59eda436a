"""RMU's forget/retain trade-off on a trained run, one line per setting.

Usage: python3 scripts/rmu_sweep.py [CONFIG] --settings "rmu_steering=8;rmu_steering=16,rmu_alpha=100"
                                    [--forget-limit 200] [--probe] [overrides...]
(default configs/default.yaml; needs `codeunlearn run` on that config first, whose eval/report.json
gives the base and codebook NLL the drops are normalised by).

Each setting is comma-separated `BaselineConfig` fields; the rest keep their defaults (10 epochs over
the forget examples the codebook model was trained on first, 4x as many retain examples, as
`codeunlearn compare` does). Every setting starts again from the trained codebook model. Prints the
held-out forget and retain NLL with their normalised drops (0 = codebook model, 1 = base model) and
writes <run_dir>/eval/rmu_sweep.json. --probe adds the multiple-choice knowledge probe of
scripts/probe_sweep.py (200 questions on the forgotten topic, 50 on each of five neighbours).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from probe_sweep import probe_accuracy, probe_evaluator  # scripts/ is on sys.path when run as a script

from codeunlearn.baselines.registry import unlearn_with_gradients
from codeunlearn.core.config import BaselineConfig, load_config
from codeunlearn.data.tables import batch_texts
from codeunlearn.data.topics import read_splits
from codeunlearn.evaluation.evaluator import Evaluator, normalized_drop
from codeunlearn.evaluation.sets import eval_sets_of
from codeunlearn.model.loading import load_model
from codeunlearn.pipeline.comparison import baseline_texts, membership_sets


def parse_setting(text: str) -> BaselineConfig:
    types = {f.name: f.type for f in dataclasses.fields(BaselineConfig)}
    values = {}
    for pair in filter(None, (p.strip() for p in text.split(","))):
        name, _, value = pair.partition("=")
        if name not in types:
            raise SystemExit(f"unknown BaselineConfig field {name!r} in {text!r}")
        values[name] = int(value) if "int" in str(types[name]) else float(value)
    config = BaselineConfig(method="rmu", **values)
    config.validate()
    return config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", nargs="?", default="configs/default.yaml")
    parser.add_argument("--settings", required=True, help="settings separated by ';'")
    parser.add_argument("--forget-limit", type=int, default=200)
    parser.add_argument("--probe", action="store_true", help="also run the knowledge probe")
    args, overrides = parser.parse_known_args()
    settings = [parse_setting(s) for s in args.settings.split(";")]
    config = load_config(args.config, overrides)
    run_dir = Path(config.run_dir)
    splits = read_splits(run_dir / "data" / "topic")
    nll = json.loads((run_dir / "eval" / "report.json").read_text())["nll"]
    base, codebook = nll["base"], nll["codebook"]
    members, _ = membership_sets(config, splits)
    subset, retain = baseline_texts(splits, members, args.forget_limit)
    rows = []
    for setting in settings:
        model = load_model(config)
        result = unlearn_with_gradients(
            model.model,
            batch_texts(subset, model.tokenizer, config.data.max_length, setting.batch_size),
            batch_texts(retain, model.tokenizer, config.data.max_length, setting.batch_size),
            setting,
        )
        scored = Evaluator(
            model, eval_sets_of(splits, model.tokenizer, config.data.max_length, config.eval.batch_size)
        ).score_codebook(None)
        if args.probe:  # built after the edit: the evaluator caches the layers below the bottleneck
            questions, probe = probe_evaluator(config, model)
            accuracy = probe_accuracy(questions, probe)
            print({topic: round(100 * value, 1) for topic, value in accuracy.items()}, flush=True)
        row = {
            **dataclasses.asdict(setting),
            "train_s": result.elapsed_s,
            "flops": result.flops_estimate,
            **{f"{k}_nll": scored[k] for k in ("forget", "retain")},
            **{f"{k}_drop": normalized_drop(base[k], codebook[k], scored[k]) for k in ("forget", "retain")},
        }
        if args.probe:
            row["probe_accuracy"] = accuracy
        rows.append(row)
        layer = "n/4" if setting.rmu_layer is None else setting.rmu_layer
        print(
            f"layer {layer} steering {setting.rmu_steering:g} alpha {setting.rmu_alpha:g} "
            f"lr {setting.rmu_lr:g}: forget {row['forget_nll']:.4f} (drop {row['forget_drop']:.3f}), "
            f"retain {row['retain_nll']:.4f} (drop {row['retain_drop']:.3f}, "
            f"+{row['retain_nll'] - codebook['retain']:.4f} nats), {row['train_s']:.0f} s",
            flush=True,
        )
    (run_dir / "eval" / "rmu_sweep.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
