"""The `codeunlearn` command line: one command per stage, plus `run` for all of them.

Every command takes `--config FILE` and any number of `section.key=value` overrides
(also accepted as `--section.key=value`), checked against the typed config before work starts.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer

from codeunlearn.cli.config_command import config_app
from codeunlearn.core.errors import CodeunlearnError

app = typer.Typer(
    help="Make a language model forget a topic without gradient steps, through a codebook bottleneck.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
EXTRA = {"allow_extra_args": True, "ignore_unknown_options": True}
OVERRIDES_HELP = (
    "Any number of section.key=value overrides may follow, e.g. train.lr=3e-4 topic.label=noun.animal "
    "run_dir=runs/animal; sections: model, data, topic, bottleneck, train, mining, unlearn, eval, "
    "translation, tracking, gates (see configs/default.yaml)."
)
CONFIG_OPTION = typer.Option(None, "--config", "-c", help="YAML config file (see configs/).")
RUN_DIR_OPTION = typer.Option(Path("runs/default"), help="Run directory holding store/.")
EXAMPLES_OPTION = typer.Option(None, help="A .jsonl/.csv/.parquet file of the texts to forget.")
ABLATION_SPEC_OPTION = typer.Option(Path("configs/ablation.yaml"), help="YAML with `axes:` and `overrides:`.")
CERTIFICATE_ARGUMENT = typer.Argument(..., help="A certificate.json written by `codeunlearn report`.")
ARTIFACTS_OPTION = typer.Option(None, help="Directory of the report's files (default: the certificate's).")
OUT_OPTION = typer.Option(None, help="Output directory (default: under the run directory).")
VERBOSE_OPTION = typer.Option(False, "--verbose", "-v", help="Log per-batch detail (DEBUG).")


def _load(ctx: typer.Context, config: Path | None, verbose: bool):
    from codeunlearn.core.config import load_config

    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    for noisy in ("httpx", "urllib3", "filelock", "transformers"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return load_config(config, ctx.args)


def _fail(error: Exception) -> None:
    typer.echo(f"error: {error}", err=True)
    raise typer.Exit(code=2)


def _run_stage(ctx: typer.Context, config: Path | None, verbose: bool, stage: Callable[[Any], Any]) -> Any:
    """Load the config and run one library stage; bad input becomes a message and exit code 2."""
    try:
        return stage(_load(ctx, config, verbose))
    except CodeunlearnError as error:
        _fail(error)


@app.command(context_settings=EXTRA, epilog=OVERRIDES_HELP)
def prepare(ctx: typer.Context, config: Path | None = CONFIG_OPTION, verbose: bool = VERBOSE_OPTION) -> None:
    """Load the corpus, split it train/test, and build the topic's forget/control/retain splits."""
    from codeunlearn.pipeline import stages as pipeline

    splits = _run_stage(ctx, config, verbose, pipeline.prepare)
    for name, entry in splits.manifest["splits"].items():
        typer.echo(f"{name:14s} {entry['count']:7d} examples  sha256 {entry['content_hash'][:16]}")


@app.command(context_settings=EXTRA, epilog=OVERRIDES_HELP)
def train(ctx: typer.Context, config: Path | None = CONFIG_OPTION, verbose: bool = VERBOSE_OPTION) -> None:
    """Train the codebook bottleneck into the base model once, and save the codebook model."""
    from codeunlearn.pipeline import stages as pipeline

    result = _run_stage(ctx, config, verbose, pipeline.train_codebook)
    if os.environ.get("RANK", "0") != "0":  # under torchrun, rank 0 reports for all processes
        return
    typer.echo(
        f"trained {result.steps} steps, {result.tokens} tokens in {result.elapsed_s:.0f} s: "
        f"loss {result.final_loss:.3f}, reconstruction {result.final_recon:.3f}, "
        f"dead codes {result.dead_share:.1%}"
    )


@app.command(context_settings=EXTRA, epilog=OVERRIDES_HELP)
def mine(ctx: typer.Context, config: Path | None = CONFIG_OPTION, verbose: bool = VERBOSE_OPTION) -> None:
    """Count code firings on the forget, control and retain sets and select the topic's codes."""
    from codeunlearn.pipeline import stages as pipeline

    selected = _run_stage(ctx, config, verbose, pipeline.mine)
    typer.echo(f"selected {len(selected.code_ids)} codes ({selected.n_eligible} eligible) by {selected.rule}")


@app.command(context_settings=EXTRA, epilog=OVERRIDES_HELP)
def unlearn(
    ctx: typer.Context,
    config: Path | None = CONFIG_OPTION,
    remove: str | None = typer.Option(None, help="Undo: remove this topic's codes from the active mask."),
    verbose: bool = VERBOSE_OPTION,
) -> None:
    """Mask the selected codes (union with the active mask); no gradient steps. --remove undoes one topic.
    With unlearn.method=ga, graddiff, npo or rmu a gradient baseline runs instead: it fine-tunes a copy of
    the trained codebook model on unlearn.forget_limit forget examples and 4x as many retain examples (the
    texts `codeunlearn compare` uses; settings under unlearn.baseline, e.g. unlearn.baseline.epochs=2) and
    saves it with a record of its cost as unlearned/<method>/, replacing an earlier one; the active mask
    is left alone. `codeunlearn evaluate` then scores it."""
    from codeunlearn.pipeline import stages as pipeline

    def stage(run_config: Any) -> str:
        if remove:
            return _mask_summary(pipeline.forget_source(run_config, remove))
        if run_config.unlearn.uses_gradients:
            from codeunlearn.pipeline import baseline_stage

            record = baseline_stage.unlearn_with_baseline(run_config)
            where = pipeline.RunPaths(Path(run_config.run_dir)).unlearned_dir / record.method
            return f"{record.summary()}; edited model in {where}; the active mask is untouched"
        return _mask_summary(pipeline.unlearn(run_config))

    typer.echo(_run_stage(ctx, config, verbose, stage))


def _mask_summary(mask: Any) -> str:
    return (
        f"active mask {mask.digest[:12]}: {len(mask.code_ids)} codes from "
        f"{', '.join(s.name for s in mask.sources) or 'no sources'}"
    )


@app.command(context_settings=EXTRA, epilog=OVERRIDES_HELP)
def evaluate(ctx: typer.Context, config: Path | None = CONFIG_OPTION, verbose: bool = VERBOSE_OPTION) -> None:
    """Held-out NLL for base, codebook, masked and random-mask models and for every model a gradient
    baseline edited (unlearned/<method>/, one row each, named by method), normalised drops, S' sweep."""
    from codeunlearn.pipeline import stages as pipeline

    report = _run_stage(ctx, config, verbose, pipeline.evaluate)
    typer.echo(pipeline.render_report(report))


@app.command(context_settings=EXTRA, epilog=OVERRIDES_HELP)
def run(ctx: typer.Context, config: Path | None = CONFIG_OPTION, verbose: bool = VERBOSE_OPTION) -> None:
    """All stages from one config: prepare, train (reused when unchanged), mine, unlearn, evaluate. With
    unlearn.method=ga, graddiff, npo or rmu: prepare, train, that gradient baseline (see `codeunlearn
    unlearn --help`), evaluate; mining and masking are skipped."""
    import time

    from codeunlearn.pipeline import stages as pipeline

    started = time.perf_counter()
    report = _run_stage(ctx, config, verbose, pipeline.run_all)
    typer.echo(pipeline.render_report(report))
    typer.echo(f"total {time.perf_counter() - started:.0f} s")


@app.command("translate-eval", context_settings=EXTRA, epilog=OVERRIDES_HELP)
def translate_eval(
    ctx: typer.Context, config: Path | None = CONFIG_OPTION, verbose: bool = VERBOSE_OPTION
) -> None:
    """The paper's setting (configs/translation.yaml): train a translation codebook, mine a word topic,
    score BLEU/chrF/METEOR/BERTScore on the topic and the rest for base, codebook, masked models across S'."""
    from codeunlearn.translation import experiment as translation_experiment

    report = _run_stage(ctx, config, verbose, translation_experiment.run_translation)
    typer.echo(report.to_markdown())


@app.command(context_settings=EXTRA, epilog=OVERRIDES_HELP)
def pipeline(ctx: typer.Context, config: Path | None = CONFIG_OPTION, verbose: bool = VERBOSE_OPTION) -> None:
    """The tracked pipeline without Prefect: every stage an MLflow run, the codebook and the mask
    registered, `production` moved if the gates pass (the Prefect flow runs the same stages)."""
    from codeunlearn.tracking import stages as tracked

    def stage(run_config: Any) -> dict:
        return tracked.run_pipeline(run_config)

    outcome = _run_stage(ctx, config, verbose, stage)
    verdict = (
        "promoted to production"
        if outcome["promoted"]
        else "not promoted: " + "; ".join(outcome["gate_failures"])
    )
    typer.echo(
        f"codebook version {outcome['codebook_version']}, mask version {outcome['mask_version']}: "
        f"forget drop {outcome['forget_drop']:.3f}, retain drop {outcome['retain_drop']:.3f}; {verdict}"
    )
    typer.echo(f"MLflow run {outcome['mlflow_run_id']} ({outcome['tracking_uri']})")


@app.command()
def sql(
    query: str = typer.Argument(
        ...,
        help="SQL over the views code_counts, code_rates, requests, request_events, masks, mask_codes, "
        "evaluations (see codeunlearn/schema.py).",
    ),
    run_dir: Path = RUN_DIR_OPTION,
) -> None:
    """Query the code store (DuckDB over Parquet) of a run directory."""
    from codeunlearn.store.code_store import CodeStore

    try:
        table = CodeStore(run_dir / "store").sql(query)
    except CodeunlearnError as error:
        _fail(error)
    typer.echo(table.to_pandas().to_string(index=False) if table.num_rows else "(no rows)")


@app.command(context_settings=EXTRA, epilog=OVERRIDES_HELP)
def compare(
    ctx: typer.Context,
    config: Path | None = CONFIG_OPTION,
    methods: str = typer.Option("ga,graddiff,npo,rmu", help="Baselines to run (ga, graddiff, npo, rmu)."),
    forget_limit: int = typer.Option(200, help="Forget examples the baselines unlearn (trained-on first)."),
    epochs: int = typer.Option(10, help="Baseline epochs over the forget examples (NPO's usual budget)."),
    lr: float = typer.Option(1e-5, help="Baseline learning rate (AdamW)."),
    batch_size: int = typer.Option(8, help="Baseline batch size."),
    rmu_layer: int | None = typer.Option(
        None, help="RMU: the decoder layer whose activations it misdirects (default: a quarter up)."
    ),
    rmu_steering: float = typer.Option(16.0, help="RMU: target norm over the layer's mean norm."),
    rmu_alpha: float = typer.Option(1200.0, help="RMU: weight of the retain activations' MSE."),
    rmu_lr: float = typer.Option(5e-5, help="RMU learning rate (--lr is the other baselines')."),
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

    from codeunlearn.core.config import BaselineConfig
    from codeunlearn.evaluation.probes import ProbeConfig
    from codeunlearn.pipeline import comparison

    def stage(run_config: Any) -> Path:
        baseline = BaselineConfig(
            lr=lr,
            epochs=epochs,
            batch_size=batch_size,
            rmu_layer=rmu_layer,
            rmu_steering=rmu_steering,
            rmu_alpha=rmu_alpha,
            rmu_lr=rmu_lr,
        )
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
            run_config, chosen, baseline, forget_limit, steps, probe if probe_questions else None, bits
        )
        scores = result.scores
        table = comparison.render(scores)
        if quantized := comparison.render_quantized(scores):
            table += (
                "\n\nForget / retain drop with weights rounded (symmetric, groups of 128)\n\n" + quantized
            )
        if result.probe is not None:
            table += "\n\nKnowledge probe\n\n" + result.probe.to_markdown()
        if relearning := comparison.render_relearning(scores):
            table += (
                "\n\nRelearning attack: forget NLL after N steps (recovery toward the codebook model)\n\n"
                + relearning
            )
        typer.echo(table)
        out = Path(run_config.run_dir) / "compare"
        out.mkdir(parents=True, exist_ok=True)
        (out / "methods.md").write_text(table + "\n")
        (out / "methods.json").write_text(json.dumps(comparison.to_json(scores), indent=2))
        if result.probe is not None:
            (out / "probe.json").write_text(json.dumps(result.probe.to_json(), indent=2))
            (out / "probe.md").write_text(result.probe.to_markdown())
        return out

    typer.echo(f"written to {_run_stage(ctx, config, verbose, stage)}")


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

    typer.echo(f"written to {_run_stage(ctx, config, verbose, stage)}")


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

    typer.echo(f"written to {_run_stage(ctx, config, verbose, stage)}")


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

    typer.echo(f"written to {_run_stage(ctx, config, verbose, stage)}")


@app.command(context_settings=EXTRA, epilog=OVERRIDES_HELP)
def report(
    ctx: typer.Context,
    config: Path | None = CONFIG_OPTION,
    mlflow: bool = typer.Option(True, help="Log the report to MLflow and tag the mask version."),
    verbose: bool = VERBOSE_OPTION,
) -> None:
    """Write <run_dir>/report: report.md with tables and plots of everything measured for the active
    mask (evaluation, compare, probe, collateral, ablate) and certificate.json binding the model, data,
    mask and results by sha256; log both to MLflow with the mask version."""

    def stage(run_config: Any) -> dict:
        if mlflow:
            from codeunlearn.tracking import stages as tracked

            return tracked.report(run_config)
        from codeunlearn.evaluation import report as reporting

        written, digest = reporting.publish(run_config, Path(run_config.run_dir) / "report")
        return {"directory": str(written.directory), "certificate_sha256": digest}

    result = _run_stage(ctx, config, verbose, stage)
    typer.echo(
        f"report and certificate in {result['directory']} (certificate sha256 {result['certificate_sha256']})"
    )
    if result.get("mask_version"):
        typer.echo(f"logged to MLflow run {result['mlflow_run_id']}, mask version {result['mask_version']}")


@app.command()
def verify(
    certificate_file: Path = CERTIFICATE_ARGUMENT,
    run_dir: Path = RUN_DIR_OPTION,
    artifacts: Path | None = ARTIFACTS_OPTION,
) -> None:
    """Recompute every hash of a deletion certificate against a run directory; exit 1 on any mismatch."""
    import json

    from codeunlearn.evaluation import certificate

    if not certificate_file.is_file():
        _fail(CodeunlearnError(f"{certificate_file} does not exist: pass a certificate.json"))
    try:
        payload = json.loads(certificate_file.read_text())
    except json.JSONDecodeError as error:
        _fail(CodeunlearnError(f"{certificate_file} is not JSON ({error}): pass a certificate.json"))
    problems = certificate.verify(payload, run_dir, artifacts or certificate_file.parent)
    for problem in problems:
        typer.echo(f"MISMATCH: {problem}")
    if problems:
        raise typer.Exit(code=1)
    typer.echo(f"certificate holds: model, mask, data and {len(payload['artifacts'])} report files match")


request_app = typer.Typer(help="Deletion requests: add, list, show, process, revert.", no_args_is_help=True)
app.add_typer(request_app, name="request")
app.add_typer(config_app, name="config")


def _request_store(run_config: Any):
    from codeunlearn.requests.queue import RequestStore

    return RequestStore(Path(run_config.run_dir) / "store")


def _tracker(run_config: Any):
    from codeunlearn.tracking.tracker import Tracker

    return Tracker(run_config)


@request_app.command("add", context_settings=EXTRA, epilog=OVERRIDES_HELP)
def request_add(
    ctx: typer.Context,
    config: Path | None = CONFIG_OPTION,
    label: str | None = typer.Option(None, help="Forget every example with this label (e.g. noun.food)."),
    keywords: str | None = typer.Option(None, help="Comma-separated words; examples containing any."),
    regex: str | None = typer.Option(None, help="Examples matching this regular expression."),
    examples: Path | None = EXAMPLES_OPTION,
    model_version: str = typer.Option("", help="Codebook model version (default: the latest)."),
    verbose: bool = VERBOSE_OPTION,
) -> None:
    """Record a pending deletion request after checking its topic and codebook version."""
    from codeunlearn.core.config import TopicConfig

    given = {
        k: v
        for k, v in {"label": label, "keywords": keywords, "regex": regex, "examples": examples}.items()
        if v
    }
    if len(given) != 1:
        _fail(
            CodeunlearnError(
                f"give exactly one of --label, --keywords, --regex, --examples; got {list(given) or 'none'}"
            )
        )
    topic = TopicConfig(
        label=label,
        keywords=tuple(w.strip() for w in keywords.split(",") if w.strip()) if keywords else (),
        regex=regex,
        examples_file=str(examples) if examples else None,
    )
    from codeunlearn.requests.processor import Processor

    request = _run_stage(
        ctx, config, verbose, lambda c: Processor(c, _tracker(c)).submit(topic, model_version)
    )
    typer.echo(
        f"{request.request_id} pending (codebook {request.model_name} version {request.model_version})"
    )
    _announce(request.request_id, config)


def _announce(request_id: str, config: Path | None) -> None:
    """Emit the `codeunlearn.request.added` Prefect event that triggers processing, if a server is set."""
    import os

    if not os.environ.get("PREFECT_API_URL"):
        return
    try:
        from prefect.events import emit_event
    except ImportError:
        return
    emit_event(
        event="codeunlearn.request.added",
        resource={
            "prefect.resource.id": f"codeunlearn.request.{request_id}",
            "request_id": request_id,
            "config_path": str(config.resolve()) if config else "configs/default.yaml",
        },
    )
    typer.echo(f"announced {request_id} to the Prefect server")


@request_app.command("list", context_settings=EXTRA, epilog=OVERRIDES_HELP)
def request_list(
    ctx: typer.Context,
    config: Path | None = CONFIG_OPTION,
    status: str | None = typer.Option(None, help="Only requests with this status."),
    verbose: bool = VERBOSE_OPTION,
) -> None:
    """List deletion requests and their status."""
    requests = _run_stage(ctx, config, verbose, lambda c: _request_store(c).list((status,) if status else ()))
    for r in requests:
        typer.echo(
            f"{r.request_id}  {r.status:10s} {r.topic_kind:13s} codebook v{r.model_version} "
            f"mask v{r.mask_version or '-'}  {r.submitted_at:%Y-%m-%d %H:%M:%S}  {r.error[:80]}"
        )
    if not requests:
        typer.echo("no requests")


@request_app.command("show", context_settings=EXTRA, epilog=OVERRIDES_HELP)
def request_show(
    ctx: typer.Context,
    request_id: str = typer.Argument(..., help="The request id (req-...)."),
    config: Path | None = CONFIG_OPTION,
    verbose: bool = VERBOSE_OPTION,
) -> None:
    """Show one request whole, error included."""
    from dataclasses import asdict

    request = _run_stage(ctx, config, verbose, lambda c: _request_store(c).get(request_id))
    for key, value in asdict(request).items():
        typer.echo(f"{key:14s} {value}")


@request_app.command("process", context_settings=EXTRA, epilog=OVERRIDES_HELP)
def request_process(
    ctx: typer.Context,
    config: Path | None = CONFIG_OPTION,
    wait: float = typer.Option(600.0, help="Seconds to wait for another processor to finish."),
    verbose: bool = VERBOSE_OPTION,
) -> None:
    """Process every pending request now, without Prefect (the scheduled deployment does the same)."""
    from codeunlearn.requests.processor import process_open_requests

    done = _run_stage(ctx, config, verbose, lambda c: process_open_requests(c, _tracker(c), wait))
    for r in done:
        typer.echo(f"{r.request_id}  {r.status:10s} mask v{r.mask_version or '-'}  {r.error}")
    if not done:
        typer.echo("no pending requests")


@request_app.command("revert", context_settings=EXTRA, epilog=OVERRIDES_HELP)
def request_revert(
    ctx: typer.Context,
    request_id: str = typer.Argument(..., help="The done request whose codes to unmask."),
    config: Path | None = CONFIG_OPTION,
    verbose: bool = VERBOSE_OPTION,
) -> None:
    """Undo one request: remove its codes from the active mask and register that as a new version."""
    from codeunlearn.requests.processor import revert_request

    request = _run_stage(ctx, config, verbose, lambda c: revert_request(c, _tracker(c), request_id))
    typer.echo(f"{request.request_id} reverted: mask version {request.mask_version} is production")


if __name__ == "__main__":
    app()
