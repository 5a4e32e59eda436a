"""The evaluate stage: held-out NLL of the base, codebook, masked and random-mask models (and of every
model a gradient baseline edited), the keyword-free forget split, and the sweep over S'."""

from __future__ import annotations

import json
import logging
import time

from codeunlearn.core.config import RunConfig
from codeunlearn.core.paths import open_run, run_paths
from codeunlearn.data.tables import write_json
from codeunlearn.data.topics import Splits, read_splits
from codeunlearn.evaluation.evaluator import KEYWORD_FREE, EvalReport, Evaluator
from codeunlearn.evaluation.outcome import random_control
from codeunlearn.evaluation.reference import reference_nll
from codeunlearn.evaluation.sets import eval_sets_of
from codeunlearn.model import assets
from codeunlearn.model.loading import load_model
from codeunlearn.model.surgery import CodebookModel
from codeunlearn.pipeline import baseline_stage
from codeunlearn.pipeline.training_texts import training_texts
from codeunlearn.unlearning.active_mask import read_active
from codeunlearn.unlearning.masks import Mask, mask_from_codes
from codeunlearn.unlearning.selection import random_codes

log = logging.getLogger(__name__)


def evaluate(
    config: RunConfig, codebook_model: CodebookModel | None = None, mask: Mask | None = None
) -> EvalReport:
    """NLL on held-out forget and retain splits for base, codebook, masked (`mask`, by default the
    active mask), random-mask models, every model a gradient baseline edited (`unlearned/<method>/`),
    and the S' sweep; writes eval/report.json and eval/report.md."""
    paths = open_run(config)
    codebook_model = codebook_model or load_model(config)
    mask = mask or read_active(paths)
    splits = read_splits(paths.splits_dir)
    evaluator = Evaluator(
        codebook_model,
        eval_sets_of(splits, codebook_model.tokenizer, config.data.max_length, config.eval.batch_size),
    )
    report = EvalReport()
    started = time.perf_counter()
    base_model, _ = assets.load_pretrained(config.model.name, codebook_model.device.type)
    report.nll["base"] = evaluator.score_model(base_model)
    del base_model
    if config.eval.run_reference:
        report.nll["reference"] = reference_nll(config, evaluator, training_texts(config), paths.eval_dir)
    report.nll["codebook"] = evaluator.score_codebook(None)
    if mask is not None and mask.code_ids:
        report.nll["masked"] = evaluator.score_codebook(mask)
        control = random_control(mask, len(mask.code_ids), config.eval.random_seed)
        report.nll["random"] = evaluator.score_codebook(control)
    unlearned = baseline_stage.score_edited_models(config, evaluator.eval_sets, report)
    report.sweep = _sweep(config, evaluator, report)
    report.calibration = calibration_entry(config, report, mask)
    keyword_free = keyword_free_summary(splits, report)
    report.notes.append(_keyword_free_note(keyword_free))
    write_json(
        paths.eval_dir / "report.json",
        {
            "nll": report.nll,
            "sweep": report.sweep,
            "keyword_free": keyword_free,
            **({"calibration": report.calibration} if report.calibration else {}),
            "mask_digest": mask.digest if mask else None,
            "elapsed_s": time.perf_counter() - started,
            **({"unlearned": unlearned} if unlearned else {}),  # models a gradient baseline edited
        },
    )
    (paths.eval_dir / "report.md").write_text(report.render())
    return report


def calibration_entry(config: RunConfig, report: EvalReport, mask: Mask | None) -> dict:
    """The mine stage's calibration of the topic's S' (selected.json), with `test`: the held-out forget
    and retain drops of the evaluated mask when it holds the codes mining selected. Empty when the
    topic was not calibrated, or a gradient baseline ran (selected.json is then another run's)."""
    paths = run_paths(config)
    if config.unlearn.uses_gradients or not paths.selection_file.is_file():
        return {}
    selection = json.loads(paths.selection_file.read_text())
    entry = selection.get("calibration")
    if not entry or selection.get("topic") != config.topic.key:
        return {}
    selected = sorted(selection["code_ids"])
    if mask is not None and "masked" in report.nll:
        sources = [s for s in mask.sources if s.name == selection["topic"]]
        if sources and sorted(sources[0].code_ids) == selected:
            entry = {**entry, "test": {s + "_drop": report.drop("masked", s) for s in ("forget", "retain")}}
    return entry


def keyword_free_summary(splits: Splits, report: EvalReport) -> dict:
    """The keyword-free forget split of an evaluation: its size, the words it avoids, and the masked
    and random-mask drops on it; or why it was skipped.

    Args:
        splits: The prepared splits, whose manifest describes the split.
        report: The evaluation, scored on it when it is not empty.

    Returns:
        `examples` and `of` (held-out forget examples), `n_words` where the words were ranked,
        `masked_drop` and `random_drop` where a mask was scored, else `skipped`: the reason.
    """
    entry = splits.manifest.get("keyword_free")
    if entry is None:
        reason = "the splits were prepared before the keyword-free split existed: run `codeunlearn prepare`"
        entry = {"count": 0, "of": splits.forget_test.num_rows, "skipped": reason}
    summary = {"examples": entry["count"], "of": entry["of"], "words_from": entry.get("words_from", "")}
    summary |= {key: entry[key] for key in ("n_words", "skipped") if key in entry}
    if "skipped" in entry:
        log.info("keyword-free forget split skipped: %s", entry["skipped"])
    elif "masked" in report.nll:
        summary |= {variant + "_drop": report.drop(variant, KEYWORD_FREE) for variant in ("masked", "random")}
    return summary


def _keyword_free_note(summary: dict) -> str:
    if "skipped" in summary:
        return f"{KEYWORD_FREE}: none ({summary['skipped']})"
    return (
        f"{KEYWORD_FREE}: the {summary['examples']} of {summary['of']} held-out forget examples that contain "
        f"none of the topic's {summary.get('n_words', 0)} most indicative words"
    )


def _sweep(config: RunConfig, evaluator: Evaluator, report: EvalReport) -> list[dict[str, float]]:
    paths = run_paths(config)
    if not config.eval.sweep or not paths.selection_file.is_file():
        return []
    selection = json.loads(paths.selection_file.read_text())
    ranked = selection["ranked_eligible"]
    n_codes = evaluator.codebook_model.bottleneck.n_codes
    rows = []
    for n_select in config.eval.sweep:
        if n_select > len(ranked):
            log.warning("sweep S'=%d skipped: only %d codes are eligible", n_select, len(ranked))
            continue
        mined = evaluator.score_codebook(mask_from_codes(n_codes, "sweep", ranked[:n_select]))
        random = evaluator.score_codebook(
            mask_from_codes(
                n_codes, "random", random_codes(n_codes, n_select, config.eval.random_seed).tolist()
            )
        )
        report.nll[f"mined@{n_select}"], report.nll[f"random@{n_select}"] = mined, random
        rows.append(
            {
                "n_select": n_select,
                "mined_forget_drop": report.drop(f"mined@{n_select}", "forget"),
                "mined_retain_delta": report.delta(f"mined@{n_select}", "retain"),
                "random_forget_drop": report.drop(f"random@{n_select}", "forget"),
                "random_retain_delta": report.delta(f"random@{n_select}", "retain"),
            }
        )
    return rows
