"""The knowledge probes on one run: base, codebook and masked models (and any others).

Three probes, each optional: the multiple-choice test (`probes`), definition generation scored by
chrF (`definitions`) and NLL on general text in another format (`general_text`). The layers below the
bottleneck are computed once for every codebook variant (see Evaluator); the base model and
gradient-edited models run in full. Definitions are generated through the bottleneck, with the
variant's mask in force.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field

import numpy as np
import pyarrow as pa

from codeunlearn.core.config import DefinitionConfig, GeneralTextConfig, ProbeConfig, RunConfig
from codeunlearn.core.errors import CodeunlearnError
from codeunlearn.core.paths import RunPaths, open_run
from codeunlearn.data.tables import read_table
from codeunlearn.evaluation.definitions import (
    Definition,
    DefinitionResult,
    chrf_by_topic,
    definition_items,
    floor_by_topic,
    generate_definitions,
    require_chrf,
)
from codeunlearn.evaluation.evaluator import Evaluator
from codeunlearn.evaluation.general_text import (
    GeneralTextResult,
    general_passages_or_skip,
    general_text_set,
)
from codeunlearn.evaluation.probes import (
    ProbeVerdict,
    Question,
    accuracy_by_topic,
    accuracy_markdown,
    answers,
    correct_answers,
    multiple_choice_questions,
    paired_p_values,
    question_set,
    verdict,
)
from codeunlearn.model import assets
from codeunlearn.model.loading import load_model
from codeunlearn.model.surgery import CodebookModel
from codeunlearn.unlearning.active_mask import read_active
from codeunlearn.unlearning.masks import Mask, apply_mask

log = logging.getLogger(__name__)


@dataclass
class ProbeResult:
    forget_topic: str
    chance: float | None  # None when the multiple-choice test was not run
    questions: dict[str, int]  # per topic; empty when the multiple-choice test was not run
    accuracy: dict[str, dict[str, float]] = field(default_factory=dict)  # variant -> topic -> accuracy
    verdicts: dict[str, ProbeVerdict] = field(default_factory=dict)  # edited variant -> check
    definitions: DefinitionResult | None = None
    general_text: GeneralTextResult | None = None

    def to_markdown(self) -> str:
        """Each probe that ran: multiple choice, then definitions, then general text."""
        parts = [self._multiple_choice_markdown()] if self.questions else []
        if self.definitions is not None:
            parts.append("### Definition generation\n\n" + self.definitions.to_markdown())
        if self.general_text is not None:
            parts.append("### General text\n\n" + self.general_text.to_markdown())
        return "\n".join(parts)

    def _multiple_choice_markdown(self) -> str:
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
                f"({'within' if check.retained_within else 'NOT within'} 2 points)" + _paired_note(check)
            )
        return "\n".join(lines) + "\n"

    def to_json(self) -> dict:
        """The multiple-choice keys (empty when not run), `definitions` and `general_text` (null when
        not run)."""
        return {
            "forget_topic": self.forget_topic,
            "chance": self.chance,
            "questions": self.questions,
            "accuracy": self.accuracy,
            "verdicts": {name: asdict(v) for name, v in self.verdicts.items()},
            "definitions": self.definitions.to_json() if self.definitions else None,
            "general_text": self.general_text.to_json() if self.general_text else None,
        }


class KnowledgeProbe:
    """Probes built once from the run's held-out corpus split; any model variant scored on them.

    `probe` None leaves out the multiple-choice test, `definitions` None the definition probe and
    `general_text` None the general-text NLL."""

    def __init__(
        self,
        config: RunConfig,
        probe: ProbeConfig | None,
        codebook_model: CodebookModel,
        definitions: DefinitionConfig | None = None,
        general_text: GeneralTextConfig | None = None,
    ) -> None:
        if config.topic.label is None:
            raise CodeunlearnError(
                "the knowledge probes need a label topic (topic.label=...): they ask about held-out "
                "records of that label"
            )
        held_out = read_table(open_run(config).corpus_dir / "test.parquet")
        forget_topic, tokenizer = config.topic.label, codebook_model.tokenizer
        self.config, self.probe, self.definition_config = config, probe, definitions
        self.questions: list[Question] = (
            multiple_choice_questions(held_out, forget_topic, probe) if probe else []
        )
        self.eval_set = question_set(self.questions, tokenizer, probe) if probe else None
        self.correct: dict[str, np.ndarray] = {}  # variant -> (Q,) bool, for the paired test
        self.eval_sets = [self.eval_set] if self.eval_set else []
        self.result = ProbeResult(
            forget_topic=forget_topic,
            chance=1 / probe.options if probe else None,
            questions=dict(Counter(q.topic for q in self.questions)),
        )
        self.definitions: list[Definition] = []
        if definitions:
            self._add_definitions(held_out, definitions)
        if general_text:
            self._add_general_text(general_text, tokenizer)
        log.info("probe: %d questions, %d lemmas to define", len(self.questions), len(self.definitions))

    def _add_definitions(self, held_out: pa.Table, definitions: DefinitionConfig) -> None:
        forget_topic = self.result.forget_topic
        self.definitions = definition_items(held_out, forget_topic, definitions)
        self.result.definitions = DefinitionResult(
            forget_topic,
            dict(Counter(item.topic for item in self.definitions)),
            definitions.max_new_tokens,
            floor_by_topic(self.definitions),
        )

    def _add_general_text(self, general_text: GeneralTextConfig, tokenizer) -> None:
        passages, skipped = general_passages_or_skip(general_text)
        general_set = general_text_set(passages, tokenizer, general_text) if passages else None
        tokens = sum(b.n_tokens - len(b.rows) for b in general_set.batches) if general_set else 0
        self.result.general_text = GeneralTextResult(
            general_text.source, len(passages), tokens, skipped=skipped
        )
        if general_set is not None:
            self.eval_sets.append(general_set)

    def evaluator_for(self, codebook_model: CodebookModel) -> Evaluator:
        """An Evaluator of this probe's sets; reuse it across masks of one model to compute the layers
        below the bottleneck once."""
        return Evaluator(codebook_model, self.eval_sets)

    def score_codebook(
        self, name: str, codebook_model: CodebookModel, mask: Mask | None, evaluator: Evaluator | None = None
    ) -> dict[str, float]:
        """Every probe on a codebook model with `mask` in force; returns the multiple-choice accuracy
        per topic (empty when that test is off). `evaluator` (from `evaluator_for`) shares work across
        masks of one model."""
        accuracy = self._record(
            name, (evaluator or self.evaluator_for(codebook_model)).examples_codebook(mask)
        )
        if self.definitions:
            apply_mask(codebook_model, mask)
            try:
                with codebook_model.bottleneck.prompted():  # each "<lemma>:" is the prompt
                    self._define(name, codebook_model.model, codebook_model.tokenizer)
            finally:
                apply_mask(codebook_model, None)
        return accuracy

    def score_model(self, name: str, model, codebook_model: CodebookModel) -> dict[str, float]:
        """Every probe on a plain causal LM (the base model), full forward; returns the multiple-choice
        accuracy per topic (empty when that test is off)."""
        accuracy = self._record(name, self.evaluator_for(codebook_model).examples_model(model))
        if self.definitions:
            self._define(name, model, codebook_model.tokenizer)
        return accuracy

    def judge(self, variant: str) -> ProbeVerdict:
        p_values = paired_p_values(self.questions, self.correct["codebook"], self.correct[variant])
        check = verdict(
            self.result.accuracy, variant, self.result.forget_topic, self.result.chance, p_values=p_values
        )
        self.result.verdicts[variant] = check
        return check

    def _record(self, name: str, per_set: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> dict[str, float]:
        if "general" in per_set:
            sums, counts = per_set["general"]
            self.result.general_text.nll[name] = float(sums.sum() / max(counts.sum(), 1))
        if "probe" not in per_set:
            return {}
        chosen = answers(self.questions, per_set["probe"][0])
        self.correct[name] = correct_answers(self.questions, chosen)
        accuracy = accuracy_by_topic(self.questions, chosen)
        self.result.accuracy[name] = accuracy
        log.info("probe %s: forgotten topic %.3f", name, accuracy[self.result.forget_topic])
        return accuracy

    def _define(self, name: str, model, tokenizer) -> None:
        lemmas = [item.lemma for item in self.definitions]
        hypotheses = generate_definitions(model, tokenizer, lemmas, self.definition_config)
        scores = chrf_by_topic(self.definitions, hypotheses)
        self.result.definitions.chrf[name] = scores
        log.info("definitions %s: forgotten topic chrF %.1f", name, scores[self.result.forget_topic])


def probe_run(
    config: RunConfig,
    probe: ProbeConfig | None,
    extra: Mapping[str, CodebookModel] | None = None,
    definitions: DefinitionConfig | None = None,
    general_text: GeneralTextConfig | None = None,
) -> ProbeResult:
    """Base, codebook and masked (the run's active mask) models, plus `extra` edited codebook models
    scored without a mask; each edited variant is judged against the codebook model on the multiple-
    choice test. `probe`, `definitions` or `general_text` None leaves that probe out.

    Raises:
        CodeunlearnError: every probe is off, or no label topic (and, from the loaders, no trained model).
        MissingAssetError: the definition probe without sacrebleu.
    """
    if probe is None and definitions is None and general_text is None:
        raise CodeunlearnError("every knowledge probe is off: turn on at least one")
    if definitions is not None:
        require_chrf()
    paths = open_run(config)
    codebook_model = load_model(config)
    knowledge = KnowledgeProbe(config, probe, codebook_model, definitions, general_text)
    base_model, _ = assets.load_pretrained(config.model.name, codebook_model.device.type)
    knowledge.score_model("base", base_model, codebook_model)
    del base_model
    evaluator = knowledge.evaluator_for(codebook_model)
    for name, mask in (("codebook", None), ("masked", _active_mask(paths))):
        if name == "masked" and mask is None:
            continue
        knowledge.score_codebook(name, codebook_model, mask, evaluator)
    for name, model in (extra or {}).items():
        knowledge.score_codebook(name, model, None)
    if probe is not None:
        for name in knowledge.result.accuracy:
            if name not in ("base", "codebook"):
                knowledge.judge(name)
    return knowledge.result


def _paired_note(check: ProbeVerdict) -> str:
    """The paired test's p-values, so a reader can tell a real loss from the probe's noise."""
    if check.forget_p_value is None or check.worst_retained_p_value is None:
        return ""
    return (
        f"; paired exact test against the codebook model: forgotten topic p = {check.forget_p_value:.2g}, "
        f"worst retained topic p = {check.worst_retained_p_value:.2g}"
    )


def _active_mask(paths: RunPaths) -> Mask | None:
    mask = read_active(paths)  # raises when it is over another codebook than the run's
    return mask if mask is not None and mask.code_ids else None
