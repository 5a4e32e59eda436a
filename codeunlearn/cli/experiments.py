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
    probe: bool = typer.Option(False, help="Multiple-choice probe on every method, as eval.probe sets it."),
    probe_questions: int | None = typer.Option(
        None,
        help="Probe questions per retained topic, 4x on the forgotten topic; turns the probe on "
        "(default: eval.probe.questions_per_topic and eval.probe.forget_questions).",
    ),
    verbose: bool = VERBOSE_OPTION,
) -> None:
    """Masking against gradient ascent, gradient difference, NPO and RMU on the same codebook model and
    evaluation: forget/retain drops, membership-inference AUC, wall-clock. Needs `codeunlearn run` first."""
    import json
    from dataclasses import replace

    from codeunlearn.core.config import BaselineConfig
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
        # The probe's settings are the config's (eval.probe); --probe-questions replaces its counts.
        probe_config = run_config.eval.probe if probe or probe_questions else None
        if probe_config is not None and probe_questions is not None:
            probe_config = replace(
                probe_config, questions_per_topic=probe_questions, forget_questions=4 * probe_questions
            )
            probe_config.validate()
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
            probe_config,
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
    questions: int | None = typer.Option(
        None,
        help="Questions per retained topic, one question = 100/N points "
        "(default: eval.probe.questions_per_topic).",
    ),
    forget_questions: int | None = typer.Option(
        None, help="Questions on the forgotten topic (default: eval.probe.forget_questions)."
    ),
    definitions: bool = typer.Option(True, help="Definition generation for held-out lemmas, scored by chrF."),
    definition_lemmas: int | None = typer.Option(
        None, help="Lemmas to define per retained topic (default: eval.definitions.lemmas_per_topic)."
    ),
    forget_definitions: int | None = typer.Option(
        None, help="Lemmas to define on the forgotten topic (default: eval.definitions.forget_lemmas)."
    ),
    new_tokens: int | None = typer.Option(
        None,
        help="Most tokens generated per definition, greedy, first line kept "
        "(default: eval.definitions.max_new_tokens).",
    ),
    general_text: bool = typer.Option(True, help="NLL on general text in another format than training."),
    general_passages: int | None = typer.Option(
        None, help="General-text passages, a seeded sample (default: eval.general_text.passages)."
    ),
    general_length: int | None = typer.Option(
        None, help="Tokens per general-text passage, BOS included (default: eval.general_text.max_length)."
    ),
    general_source: str | None = typer.Option(
        None,
        help="debian-reference (skipped with a warning when not installed) or a text file whose passages "
        "are separated by blank lines (default: eval.general_text.source).",
    ),
    seed: int | None = typer.Option(
        None, help="Seed of the question, lemma and passage samples (default: each section's seed)."
    ),
    verbose: bool = VERBOSE_OPTION,
) -> None:
    """Knowledge probes for the base, codebook and masked models: multiple choice on held-out lemmas
    (which of four glosses is this lemma's?), definitions generated for held-out lemmas (chrF against the
    gloss) and NLL on general text in another format. Writes eval/probe.md and eval/probe.json."""
    import json
    from dataclasses import replace

    from codeunlearn.evaluation.knowledge import probe_run

    def chosen(wanted: bool, section: Any, **given: Any) -> Any:
        """The config's `section` with the options given here in place of its values; None when off."""
        if not wanted:
            return None
        section = replace(section, **{k: v for k, v in given.items() if v is not None})
        section.validate()
        return section

    def stage(run_config: Any) -> Path:
        # The probes' settings are the config's (eval.probe, eval.definitions, eval.general_text); an
        # option given here replaces one.
        settings = run_config.eval
        result = probe_run(
            run_config,
            chosen(
                multiple_choice,
                settings.probe,
                questions_per_topic=questions,
                forget_questions=forget_questions,
                seed=seed,
            ),
            definitions=chosen(
                definitions,
                settings.definitions,
                forget_lemmas=forget_definitions,
                lemmas_per_topic=definition_lemmas,
                max_new_tokens=new_tokens,
                seed=seed,
            ),
            general_text=chosen(
                general_text,
                settings.general_text,
                source=general_source,
                passages=general_passages,
                max_length=general_length,
                seed=seed,
            ),
        )
        target = Path(run_config.run_dir) / "eval"
        target.mkdir(parents=True, exist_ok=True)
        (target / "probe.md").write_text(result.to_markdown())
        (target / "probe.json").write_text(json.dumps(result.to_json(), indent=2))
        typer.echo(result.to_markdown())
        return target

    typer.echo(f"written to {run_stage(ctx, config, verbose, stage)}")
