"""The experiment commands: compare, ablate, collateral, probe.

Library modules are imported inside each command: importing torch costs seconds, and `--help`
should not pay for it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from codeunlearn.cli.common import (
    ABLATION_SPEC_OPTION,
    CONFIG_OPTION,
    EXTRA,
    OUT_OPTION,
    OVERRIDES_HELP,
    VERBOSE_OPTION,
    app,
    run_stage,
)
from codeunlearn.core.errors import CodeunlearnError


@app.command(context_settings=EXTRA, epilog=OVERRIDES_HELP)
def compare(
    ctx: typer.Context,
    config: Path | None = CONFIG_OPTION,
    methods: str = typer.Option("ga,graddiff,npo,rmu", help="Baselines to run (ga, graddiff, npo, rmu)."),
    forget_limit: int | None = typer.Option(
        None, help="Forget examples the baselines unlearn (default: unlearn.forget_limit)."
    ),
    epochs: int | None = typer.Option(None, help="Baseline epochs (default: unlearn.baseline.epochs)."),
    lr: float | None = typer.Option(None, help="Baseline learning rate (default: unlearn.baseline.lr)."),
    batch_size: int | None = typer.Option(
        None, help="Baseline batch size (default: unlearn.baseline.batch_size)."
    ),
    rmu_layer: int | None = typer.Option(None, help="RMU's layer (default: unlearn.baseline.rmu_layer)."),
    rmu_steering: float | None = typer.Option(
        None, help="RMU steering (default: unlearn.baseline.rmu_steering)."
    ),
    rmu_alpha: float | None = typer.Option(
        None, help="RMU retain weight (default: unlearn.baseline.rmu_alpha)."
    ),
    rmu_lr: float | None = typer.Option(None, help="RMU learning rate (default: unlearn.baseline.rmu_lr)."),
    relearn: str = typer.Option("", help="Relearning attack: comma-separated step counts, e.g. 5,10,20."),
    quantize: str = typer.Option("", help="Quantization attack: bit widths to round weights to, e.g. 8,4."),
    probe_questions: int = typer.Option(
        0,
        help="Multiple-choice probe on every method: questions per retained topic (4x on the forget topic).",
    ),
    verbose: bool = VERBOSE_OPTION,
) -> None:
    """Masking against gradient ascent, gradient difference, NPO and RMU on the same codebook model and
    evaluation: forget/retain drops, membership-inference AUC, wall-clock. Needs `codeunlearn run` first."""
    import json
    from dataclasses import replace

    from codeunlearn.core.config import BaselineConfig
    from codeunlearn.evaluation.probes import ProbeConfig
    from codeunlearn.evaluation import method_scores
    from codeunlearn.pipeline import comparison

    def stage(run_config: Any) -> Path:
        # The baseline settings are the config's (unlearn.baseline); an option given here replaces one.
        given = {
            "lr": lr,
            "epochs": epochs,
            "batch_size": batch_size,
            "rmu_layer": rmu_layer,
            "rmu_steering": rmu_steering,
            "rmu_alpha": rmu_alpha,
            "rmu_lr": rmu_lr,
        }
        baseline = replace(run_config.unlearn.baseline, **{k: v for k, v in given.items() if v is not None})
        baseline.validate()
        chosen = tuple(m.strip() for m in methods.split(",") if m.strip())
        for method in chosen:
            BaselineConfig(method=method).validate()
        try:
            steps = tuple(int(n) for n in relearn.split(",") if n.strip())
        except ValueError:
            raise CodeunlearnError(f"--relearn={relearn!r}: give step counts like 5,10,20") from None
        probe = ProbeConfig(questions_per_topic=probe_questions, forget_questions=4 * probe_questions)
        try:
            bits = tuple(int(b) for b in quantize.split(",") if b.strip())
        except ValueError:
            raise CodeunlearnError(f"--quantize={quantize!r}: give bit widths like 8,4") from None
        if any(not 2 <= b <= 16 for b in bits):
            raise CodeunlearnError(f"--quantize={quantize!r}: bit widths must lie in 2..16")
        result = comparison.compare(
            run_config,
            chosen,
            baseline,
            forget_limit or run_config.unlearn.forget_limit,
            steps,
            probe if probe_questions else None,
            bits,
        )
        scores = result.scores
        table = method_scores.render(scores)
        if quantized := method_scores.render_quantized(scores):
            table += (
                "\n\nForget / retain drop with weights rounded (symmetric, groups of 128)\n\n" + quantized
            )
        if result.probe is not None:
            table += "\n\nKnowledge probe\n\n" + result.probe.to_markdown()
        if relearning := method_scores.render_relearning(scores):
            table += (
                "\n\nRelearning attack: forget NLL after N steps (recovery toward the codebook model)\n\n"
                + relearning
            )
        typer.echo(table)
        out = Path(run_config.run_dir) / "compare"
        out.mkdir(parents=True, exist_ok=True)
        (out / "methods.md").write_text(table + "\n")
        (out / "methods.json").write_text(json.dumps(method_scores.to_json(scores), indent=2))
        if result.probe is not None:
            (out / "probe.json").write_text(json.dumps(result.probe.to_json(), indent=2))
            (out / "probe.md").write_text(result.probe.to_markdown())
        return out

    typer.echo(f"written to {run_stage(ctx, config, verbose, stage)}")


@app.command(context_settings=EXTRA, epilog=OVERRIDES_HELP)
def ablate(
    ctx: typer.Context,
    config: Path | None = CONFIG_OPTION,
    spec: Path = ABLATION_SPEC_OPTION,
    out: Path | None = OUT_OPTION,
    verbose: bool = VERBOSE_OPTION,
) -> None:
    """Change one setting at a time (S', k, layer, C, mode, ...) around the config, run each variant end
    to end, and write ablation.md, ablation.json and ablation.png."""
    from codeunlearn.pipeline import ablation

    def stage(run_config: Any) -> Path:
        target = out or Path(run_config.run_dir) / "ablation"
        result = ablation.run_ablation(run_config, ablation.load_spec(spec), target)
        typer.echo(result.to_markdown())
        return target

    typer.echo(f"written to {run_stage(ctx, config, verbose, stage)}")


@app.command(context_settings=EXTRA, epilog=OVERRIDES_HELP)
def collateral(
    ctx: typer.Context, config: Path | None = CONFIG_OPTION, verbose: bool = VERBOSE_OPTION
) -> None:
    """Which retained topics the active mask hurts: per topic, the share of its code firings the mask
    disables and its enriched codes the mask holds (known before applying), next to the measured damage
    from `codeunlearn evaluate`. Writes eval/collateral.md, .json and .png."""
    from codeunlearn.evaluation import collateral as collateral_damage

    def stage(run_config: Any) -> Path:
        report = collateral_damage.collateral(run_config)
        target = Path(run_config.run_dir) / "eval"
        collateral_damage.write(report, target)
        typer.echo(report.to_markdown())
        return target

    typer.echo(f"written to {run_stage(ctx, config, verbose, stage)}")


@app.command(context_settings=EXTRA, epilog=OVERRIDES_HELP)
def probe(
    ctx: typer.Context,
    config: Path | None = CONFIG_OPTION,
    multiple_choice: bool = typer.Option(True, help="Multiple choice: which of four glosses is the lemma's?"),
    questions: int = typer.Option(50, help="Questions per retained topic (one question = 100/N points)."),
    forget_questions: int = typer.Option(200, help="Questions on the forgotten topic."),
    definitions: bool = typer.Option(True, help="Definition generation for held-out lemmas, scored by chrF."),
    definition_lemmas: int = typer.Option(10, help="Lemmas to define per retained topic."),
    forget_definitions: int = typer.Option(50, help="Lemmas to define on the forgotten topic."),
    new_tokens: int = typer.Option(
        24, help="Most tokens generated per definition (greedy; first line kept)."
    ),
    general_text: bool = typer.Option(True, help="NLL on general text in another format than training."),
    general_passages: int = typer.Option(100, help="General-text passages (a seeded sample)."),
    general_length: int = typer.Option(128, help="Tokens per general-text passage, BOS included."),
    general_source: str = typer.Option(
        "debian-reference",
        help="debian-reference (skipped with a warning when not installed) or a text file whose passages "
        "are separated by blank lines.",
    ),
    seed: int = typer.Option(0, help="Seed of the question, lemma and passage samples."),
    verbose: bool = VERBOSE_OPTION,
) -> None:
    """Knowledge probes for the base, codebook and masked models: multiple choice on held-out lemmas
    (which of four glosses is this lemma's?), definitions generated for held-out lemmas (chrF against the
    gloss) and NLL on general text in another format. Writes eval/probe.md and eval/probe.json."""
    import json

    from codeunlearn.evaluation.definitions import DefinitionConfig
    from codeunlearn.evaluation.general_text import GeneralTextConfig
    from codeunlearn.evaluation.knowledge import probe_run
    from codeunlearn.evaluation.probes import ProbeConfig

    choice_config = ProbeConfig(questions_per_topic=questions, forget_questions=forget_questions, seed=seed)
    definition_config = DefinitionConfig(
        forget_lemmas=forget_definitions,
        lemmas_per_topic=definition_lemmas,
        max_new_tokens=new_tokens,
        seed=seed,
    )
    general_config = GeneralTextConfig(
        source=general_source, passages=general_passages, max_length=general_length, seed=seed
    )

    def stage(run_config: Any) -> Path:
        for part, wanted in (
            (choice_config, multiple_choice),
            (definition_config, definitions),
            (general_config, general_text),
        ):
            if wanted:
                part.validate()
        result = probe_run(
            run_config,
            choice_config if multiple_choice else None,
            definitions=definition_config if definitions else None,
            general_text=general_config if general_text else None,
        )
        target = Path(run_config.run_dir) / "eval"
        target.mkdir(parents=True, exist_ok=True)
        (target / "probe.md").write_text(result.to_markdown())
        (target / "probe.json").write_text(json.dumps(result.to_json(), indent=2))
        typer.echo(result.to_markdown())
        return target

    typer.echo(f"written to {run_stage(ctx, config, verbose, stage)}")
