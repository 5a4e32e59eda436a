"""The multiple-choice knowledge probe on one run: base, codebook and masked models (and any others).

The layers below the bottleneck are computed once for every codebook variant (see Evaluator); the base
model and gradient-edited models run in full.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

from codeunlearn import assets
from codeunlearn.config import RunConfig
from codeunlearn.errors import CodeunlearnError
from codeunlearn.evaluation import Evaluator
from codeunlearn.masks import Mask, load_mask
from codeunlearn.pipeline import load_model, read_table, setup
from codeunlearn.probes import (
    ProbeConfig,
    ProbeVerdict,
    Question,
    accuracy_by_topic,
    accuracy_markdown,
    answers,
    multiple_choice_questions,
    question_set,
    verdict,
)
from codeunlearn.surgery import CodebookModel

log = logging.getLogger(__name__)


@dataclass
class ProbeResult:
    forget_topic: str
    chance: float
    questions: dict[str, int]  # per topic
    accuracy: dict[str, dict[str, float]] = field(default_factory=dict)  # variant -> topic -> accuracy
    verdicts: dict[str, ProbeVerdict] = field(default_factory=dict)  # edited variant -> check

    def to_markdown(self) -> str:
        lines = [
            f"Multiple choice ({round(1 / self.chance)} glosses per held-out lemma, chance "
            f"{100 * self.chance:.0f}%), accuracy in %; forgotten topic: {self.forget_topic}",
            "",
            accuracy_markdown(self.accuracy, self.questions),
            "",
        ]
        for name, check in self.verdicts.items():
            lines.append(
                f"- {name}: forgotten topic {100 * check.codebook_forget:.1f}% -> "
                f"{100 * check.edited_forget:.1f}% "
                f"(halfway to chance is {100 * (check.codebook_forget + check.chance) / 2:.1f}%: "
                f"{'met' if check.halfway_to_chance else 'NOT met'}); worst retained topic "
                f"{check.worst_retained_topic} {-check.worst_retained_loss:+.1f} points "
                f"({'within' if check.retained_within else 'NOT within'} 2 points)"
            )
        return "\n".join(lines) + "\n"

    def to_json(self) -> dict:
        return {
            "forget_topic": self.forget_topic,
            "chance": self.chance,
            "questions": self.questions,
            "accuracy": self.accuracy,
            "verdicts": {name: asdict(v) for name, v in self.verdicts.items()},
        }


class KnowledgeProbe:
    """Questions built once from the run's held-out corpus split; any model variant scored on them."""

    def __init__(self, config: RunConfig, probe: ProbeConfig, codebook_model: CodebookModel) -> None:
        if config.topic.label is None:
            raise CodeunlearnError(
                "the multiple-choice probe needs a label topic (topic.label=...): it asks about held-out "
                "records of that label"
            )
        paths = setup(config)
        self.config, self.probe = config, probe
        self.questions: list[Question] = multiple_choice_questions(
            read_table(paths.corpus_dir / "test.parquet"), config.topic.label, probe
        )
        self.eval_set = question_set(self.questions, codebook_model.tokenizer, probe)
        self.result = ProbeResult(
            forget_topic=config.topic.label,
            chance=1 / probe.options,
            questions=dict(Counter(q.topic for q in self.questions)),
        )
        log.info("probe: %d questions over %d topics", len(self.questions), len(self.result.questions))

    def score_codebook(self, name: str, codebook_model: CodebookModel, mask: Mask | None) -> dict[str, float]:
        """Accuracy per topic of a codebook model with `mask` in force."""
        per_set = Evaluator(codebook_model, [self.eval_set]).examples_codebook(mask)
        return self._record(name, *per_set["probe"])

    def score_model(self, name: str, model, codebook_model: CodebookModel) -> dict[str, float]:
        """Accuracy per topic of a plain causal LM (the base model), full forward."""
        return self._record(name, *Evaluator(codebook_model, [self.eval_set]).examples_model(model)["probe"])

    def judge(self, variant: str) -> ProbeVerdict:
        check = verdict(self.result.accuracy, variant, self.result.forget_topic, self.result.chance)
        self.result.verdicts[variant] = check
        return check

    def _record(self, name: str, sums, counts) -> dict[str, float]:
        accuracy = accuracy_by_topic(self.questions, answers(self.questions, sums))
        self.result.accuracy[name] = accuracy
        log.info("probe %s: forgotten topic %.3f", name, accuracy[self.result.forget_topic])
        return accuracy


def probe_run(
    config: RunConfig, probe: ProbeConfig, extra: Mapping[str, CodebookModel] | None = None
) -> ProbeResult:
    """Base, codebook and masked (the run's active mask) models, plus `extra` edited codebook models
    scored without a mask; each edited variant is judged against the codebook model."""
    paths = setup(config)
    codebook_model = load_model(config)
    knowledge = KnowledgeProbe(config, probe, codebook_model)
    base_model, _ = assets.load_pretrained(config.model.name, codebook_model.device.type)
    knowledge.score_model("base", base_model, codebook_model)
    del base_model
    evaluator = Evaluator(codebook_model, [knowledge.eval_set])
    for name, mask in (("codebook", None), ("masked", _active_mask(paths.active_mask))):
        if name == "masked" and mask is None:
            continue
        knowledge._record(name, *evaluator.examples_codebook(mask)["probe"])
    for name, model in (extra or {}).items():
        knowledge.score_codebook(name, model, None)
    for name in knowledge.result.accuracy:
        if name not in ("base", "codebook"):
            knowledge.judge(name)
    return knowledge.result


def _active_mask(path: Path) -> Mask | None:
    mask = load_mask(path) if path.is_file() else None
    return mask if mask is not None and mask.code_ids else None
