"""Knowledge probes: does a model still know a topic, apart from having adapted to the text format?

Multiple choice over held-out WordNet synsets: given a lemma, which of four glosses is its own? Each
option is scored by how much the lemma raises the gloss's log-probability: log p(gloss | "<lemma>:")
minus log p(gloss | ":") (domain-conditional PMI, Holtzman et al. 2021). Plain likelihood would mostly
measure how probable each gloss is on its own, which puts a 135M model at chance. Distractors are the
glosses of other questions: some from the same topic (so that a topic-wide rise in loss does not give
the answer away) and the rest from other topics. Chance is 1 / options.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from math import comb

import numpy as np
import pyarrow as pa

from codeunlearn.core.config import ProbeConfig
from codeunlearn.core.errors import CodeunlearnError
from codeunlearn.data.batching import bos_id, make_batches
from codeunlearn.evaluation.evaluator import EvalSet


@dataclass(frozen=True)
class Question:
    topic: str
    lemma: str
    options: tuple[str, ...]  # glosses
    answer: int  # index of the lemma's own gloss


def multiple_choice_questions(table: pa.Table, forget_topic: str, config: ProbeConfig) -> list[Question]:
    """Questions from a held-out table with columns lemmas (or text), gloss and label.

    Every topic with enough synsets gets `questions_per_topic` questions (`forget_questions` for the
    forgotten one); topics too small to draw distinct same-topic distractors are left out.
    """
    config.validate()
    if "label" not in table.column_names:
        raise CodeunlearnError("the probe needs a `label` column: it asks about held-out records per label")
    lemmas, glosses = terms_and_definitions(table)
    labels = [str(label) for label in table.column("label").to_pylist()]
    by_topic: dict[str, list[int]] = defaultdict(list)
    for row, label in enumerate(labels):
        by_topic[label].append(row)
    if forget_topic not in by_topic:
        raise CodeunlearnError(f"no held-out synsets of {forget_topic!r} to build probe questions from")
    rng = np.random.default_rng(config.seed)
    picked: dict[str, list[int]] = {}
    for topic in sorted(by_topic):
        wanted = config.forget_questions if topic == forget_topic else config.questions_per_topic
        rows = [int(r) for r in rng.permutation(by_topic[topic])[:wanted]]
        if len(rows) > config.same_topic_distractors:  # too small a topic cannot supply distractors
            picked[topic] = rows
    pool = [(topic, row) for topic, rows in picked.items() for row in rows]
    questions = []
    for topic, rows in picked.items():
        others = [row for other, row in pool if other != topic]
        for row in rows:
            same = rng.choice([r for r in rows if r != row], config.same_topic_distractors, replace=False)
            other = rng.choice(others, config.options - 1 - config.same_topic_distractors, replace=False)
            choices = [row, *map(int, same), *map(int, other)]
            order = rng.permutation(len(choices))
            questions.append(
                Question(
                    topic=topic,
                    lemma=lemmas[row],
                    options=tuple(glosses[choices[i]] for i in order),
                    answer=int(np.flatnonzero(order == 0)[0]),
                )
            )
    return questions


def terms_and_definitions(table: pa.Table) -> tuple[list[str], list[str]]:
    """(lemma, gloss) per record: WordNet's columns, or "term: definition" texts of any corpus."""
    if {"lemmas", "gloss"} <= set(table.column_names):
        return [names[0] for names in table.column("lemmas").to_pylist()], table.column("gloss").to_pylist()
    texts = table.column("text").to_pylist()
    pairs = [text.partition(": ") for text in texts]
    if not all(sep and term and definition for term, sep, definition in pairs):
        raise CodeunlearnError(
            "the probe needs `lemmas` and `gloss` columns, or texts of the form 'term: definition'"
        )
    return [term for term, _, _ in pairs], [definition for _, _, definition in pairs]


def question_set(questions: Sequence[Question], tokenizer, config: ProbeConfig) -> EvalSet:
    """Sequences scored on their gloss tokens only: first "<lemma>: <gloss>" for every (question,
    option), sequence `q * options + j` being option j of question q; then ": <gloss>" once per
    distinct gloss, in order of first appearance (see `distinct_glosses`)."""
    start = bos_id(tokenizer)
    sequences, score_from, groups = [], [], []

    def add(prompt_text: str, gloss: str, group: str) -> None:
        prompt = tokenizer(prompt_text, add_special_tokens=False)["input_ids"]
        ids = [start, *prompt, *tokenizer(f" {gloss}", add_special_tokens=False)["input_ids"]]
        sequences.append(ids[: config.max_length])
        score_from.append(1 + len(prompt))
        groups.append(group)

    for question in questions:
        for option in question.options:
            add(f"{question.lemma}:", option, question.topic)
    for gloss in distinct_glosses(questions):
        add(":", gloss, "unconditional")
    if any(len(ids) <= s for ids, s in zip(sequences, score_from, strict=True)):
        raise CodeunlearnError(
            f"eval.probe.max_length={config.max_length} cuts some glosses off entirely: raise it"
        )
    return EvalSet(
        "probe",
        make_batches(sequences, config.batch_size, tokenizer.pad_token_id),
        groups,
        score_from=np.asarray(score_from),
    )


def distinct_glosses(questions: Sequence[Question]) -> list[str]:
    return list(dict.fromkeys(option for question in questions for option in question.options))


def answers(questions: Sequence[Question], sums: np.ndarray) -> np.ndarray:
    """Each question's chosen option: the largest log p(gloss | lemma) - log p(gloss | no lemma).

    `sums` are the summed gloss NLLs of `question_set`'s sequences, in its order."""
    n_options = len(questions[0].options)
    conditional = sums[: len(questions) * n_options].reshape(len(questions), n_options)
    unconditional_of = dict(zip(distinct_glosses(questions), sums[len(questions) * n_options :], strict=True))
    unconditional = np.array([[unconditional_of[o] for o in q.options] for q in questions])
    return (conditional - unconditional).argmin(axis=1)  # NLL difference = -PMI


def correct_answers(questions: Sequence[Question], chosen: np.ndarray) -> np.ndarray:
    """(Q,) bool: whether each question's chosen option is its answer."""
    return np.asarray(chosen) == np.array([question.answer for question in questions])


def accuracy_by_topic(questions: Sequence[Question], chosen: np.ndarray) -> dict[str, float]:
    correct: dict[str, list[bool]] = defaultdict(list)
    for question, hit in zip(questions, correct_answers(questions, chosen), strict=True):
        correct[question.topic].append(bool(hit))
    return {topic: float(np.mean(hits)) for topic, hits in sorted(correct.items())}


def mcnemar_p_value(before: np.ndarray, after: np.ndarray) -> float:
    """Two-sided exact McNemar test on paired answers to the same questions: how likely a split at
    least this lopsided between questions lost and questions gained would be if the edit only
    reshuffled which questions a model gets right. Only the questions that changed count.

    With 50 questions a topic, a 2-point loss is one question: the probe cannot tell that from noise,
    and this says so.
    """
    before, after = np.asarray(before, dtype=bool), np.asarray(after, dtype=bool)
    lost, gained = int((before & ~after).sum()), int((~before & after).sum())
    changed = lost + gained
    if changed == 0:
        return 1.0
    tail = sum(comb(changed, i) for i in range(min(lost, gained) + 1))
    return min(1.0, 2 * tail / 2**changed)


def paired_p_values(questions: Sequence[Question], before: np.ndarray, after: np.ndarray) -> dict[str, float]:
    """`mcnemar_p_value` per topic between two variants' `correct_answers` on the same questions."""
    rows: dict[str, list[int]] = defaultdict(list)
    for index, question in enumerate(questions):
        rows[question.topic].append(index)
    return {topic: mcnemar_p_value(before[index], after[index]) for topic, index in sorted(rows.items())}


@dataclass
class ProbeVerdict:
    """The acceptance check of a masked (or otherwise unlearned) model against the codebook model."""

    forget_topic: str
    chance: float
    codebook_forget: float
    edited_forget: float
    halfway_to_chance: bool  # edited forget accuracy <= midpoint of codebook accuracy and chance
    worst_retained_topic: str
    worst_retained_loss: float  # accuracy points lost, 100 = all
    retained_within: bool  # every retained topic loses at most `max_loss_points`
    # paired exact McNemar p-values against the codebook model (None without per-question answers)
    forget_p_value: float | None = None
    worst_retained_p_value: float | None = None


def verdict(
    accuracy: Mapping[str, Mapping[str, float]],
    variant: str,
    forget_topic: str,
    chance: float,
    max_loss_points: float = 2.0,
    p_values: Mapping[str, float] | None = None,
) -> ProbeVerdict:
    """`p_values` (topic -> `paired_p_values` of the variant against the codebook model), when given,
    go into the verdict beside the accuracies; the pass/fail fields use the accuracies only."""
    codebook, edited = accuracy["codebook"], accuracy[variant]
    midpoint = (codebook[forget_topic] + chance) / 2
    losses = {t: 100 * (codebook[t] - edited[t]) for t in codebook if t != forget_topic}
    worst = max(losses, key=losses.get)
    return ProbeVerdict(
        forget_topic=forget_topic,
        chance=chance,
        codebook_forget=codebook[forget_topic],
        edited_forget=edited[forget_topic],
        halfway_to_chance=edited[forget_topic] <= midpoint + 1e-12,
        worst_retained_topic=worst,
        worst_retained_loss=losses[worst],
        retained_within=losses[worst] <= max_loss_points + 1e-9,
        forget_p_value=p_values[forget_topic] if p_values else None,
        worst_retained_p_value=p_values[worst] if p_values else None,
    )


def accuracy_markdown(accuracy: Mapping[str, Mapping[str, float]], counts: Mapping[str, int]) -> str:
    """Topics as rows, variants as columns; accuracy in percent and the change of each edited
    variant against the codebook model."""
    edited = [v for v in accuracy if v not in ("base", "codebook")]
    return topic_table(accuracy, counts, "questions", edited, scale=100.0)


def topic_table(
    values: Mapping[str, Mapping[str, float]],
    counts: Mapping[str, int],
    count_label: str,
    edited: Sequence[str],
    scale: float = 1.0,
) -> str:
    """A Markdown table of a per-topic score: one row per topic of the codebook model, one column per
    variant, then the change of each `edited` variant against the codebook model.

    Args:
        values: variant -> topic -> score; must hold "codebook".
        counts: topic -> items scored (questions, lemmas), shown in the `count_label` column.
        edited: The variants whose change against the codebook model gets a column.
        scale: Multiplies every score and change (100 turns a fraction into percent).

    Returns:
        The table, one decimal per score.
    """
    variants = list(values)
    header = ["topic", count_label, *variants, *(f"{v} - codebook" for v in edited)]
    lines = ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
    codebook = values["codebook"]
    for topic in codebook:
        cells = [topic, str(counts[topic])]
        cells += [f"{scale * values[v][topic]:.1f}" for v in variants]
        cells += [f"{scale * (values[v][topic] - codebook[topic]):+.1f}" for v in edited]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
