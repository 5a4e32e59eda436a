"""The multiple-choice probe: question construction, PMI answers, the acceptance verdict."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from codeunlearn.core.config import ProbeConfig
from codeunlearn.core.errors import CodeunlearnError
from codeunlearn.evaluation.probes import (
    Question,
    accuracy_by_topic,
    answers,
    correct_answers,
    distinct_glosses,
    mcnemar_p_value,
    multiple_choice_questions,
    paired_p_values,
    question_set,
    verdict,
)


def _table() -> pa.Table:
    rows = [
        {"lemmas": [f"{topic}{i}"], "gloss": f"gloss of {topic}{i}", "label": topic}
        for topic in ("food", "animal", "plant")
        for i in range(6)
    ]
    return pa.Table.from_pylist(rows)


def test_questions_hold_the_answer_one_same_topic_distractor_and_others_from_other_topics():
    config = ProbeConfig(questions_per_topic=4, forget_questions=5, seed=3)
    questions = multiple_choice_questions(_table(), "food", config)

    assert [sum(q.topic == t for q in questions) for t in ("animal", "food", "plant")] == [4, 5, 4]
    asked = {q.lemma for q in questions}
    for q in questions:
        assert len(q.options) == 4 and len(set(q.options)) == 4
        assert q.options[q.answer] == f"gloss of {q.lemma}"
        topics = [option.removeprefix("gloss of ").rstrip("0123456789") for option in q.options]
        assert topics.count(q.topic) == 2  # the answer and one same-topic distractor
        # Distractors are other questions' glosses, so each gloss is scored once unconditionally.
        assert {o.removeprefix("gloss of ") for o in q.options} <= asked
    assert questions == multiple_choice_questions(_table(), "food", config)  # seeded
    assert sorted({q.answer for q in questions}) == [0, 1, 2, 3]  # the answer's slot is shuffled


def test_questions_refuse_a_topic_without_held_out_records():
    with pytest.raises(CodeunlearnError, match="noun.time"):
        multiple_choice_questions(_table(), "noun.time", ProbeConfig())


def test_answers_use_pmi_not_plain_likelihood():
    questions = [Question("food", "bread", ("short", "long correct"), answer=1)]
    # Summed gloss NLL given the lemma: "short" is likelier on its own terms (2.0 < 5.0) ...
    conditional = [2.0, 5.0]
    # ... but the lemma lowers the NLL of "long correct" by 4 nats and of "short" by only 0.5.
    unconditional = [2.5, 9.0]  # in distinct_glosses order: short, long correct
    assert distinct_glosses(questions) == ["short", "long correct"]
    chosen = answers(questions, np.array(conditional + unconditional))
    assert chosen.tolist() == [1]
    assert accuracy_by_topic(questions, chosen) == {"food": 1.0}


def test_question_set_scores_the_gloss_after_the_lemma(tokenizer):
    questions = [Question("food", "bread", ("a baked food", "a small animal"), answer=0)]
    eval_set = question_set(questions, tokenizer, ProbeConfig(options=2, same_topic_distractors=0))
    lemma_tokens = len(tokenizer("bread:", add_special_tokens=False)["input_ids"])
    separator_tokens = len(tokenizer(":", add_special_tokens=False)["input_ids"])
    # Two conditional sequences, then the two glosses once each without the lemma.
    assert eval_set.score_from.tolist() == [1 + lemma_tokens] * 2 + [1 + separator_tokens] * 2
    assert eval_set.groups == ["food", "food", "unconditional", "unconditional"]


def test_verdict_halfway_to_chance_and_two_point_budget():
    accuracy = {
        "codebook": {"food": 0.65, "animal": 0.60, "plant": 0.70},
        "masked": {"food": 0.45, "animal": 0.58, "plant": 0.71},
        "leaky": {"food": 0.46, "animal": 0.57, "plant": 0.70},
    }
    ok = verdict(accuracy, "masked", "food", chance=0.25)
    assert ok.halfway_to_chance and ok.retained_within  # 45 <= (65 + 25) / 2; animal lost 2 points
    assert ok.worst_retained_topic == "animal" and abs(ok.worst_retained_loss - 2.0) < 1e-9
    leaky = verdict(accuracy, "leaky", "food", chance=0.25)
    assert not leaky.halfway_to_chance and not leaky.retained_within


def test_mcnemar_p_value_counts_only_the_questions_that_changed():
    # 3 lost, 1 gained, 6 unchanged: two-sided exact binomial on 4 changes, 2 * P(X <= 1) = 2 * 5/16
    before = np.array([1, 1, 1, 0, 1, 1, 0, 0, 1, 0], dtype=bool)
    after = np.array([0, 0, 0, 1, 1, 1, 0, 0, 1, 0], dtype=bool)
    assert mcnemar_p_value(before, after) == pytest.approx(10 / 16)
    assert mcnemar_p_value(before, before) == 1.0  # nothing changed
    assert mcnemar_p_value(np.ones(8, bool), np.zeros(8, bool)) == pytest.approx(2 / 2**8)
    assert mcnemar_p_value([1, 0], [0, 1]) == 1.0  # capped: one lost, one gained


def test_mcnemar_p_value_matches_scipy_binomtest():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    for _ in range(20):
        before, after = rng.random(60) < 0.6, rng.random(60) < 0.5
        lost, gained = int((before & ~after).sum()), int((~before & after).sum())
        expected = stats.binomtest(lost, lost + gained, 0.5).pvalue
        assert mcnemar_p_value(before, after) == pytest.approx(expected, rel=1e-9)


def test_paired_p_values_per_topic_and_in_the_verdict():
    questions = [Question(t, f"{t}{i}", ("a", "b"), 0) for t in ("food", "plant") for i in range(8)]
    codebook = correct_answers(questions, np.zeros(16, dtype=int))  # all right
    # the edit gets every food question wrong and one plant question wrong
    edited = correct_answers(questions, np.array([1] * 8 + [1] + [0] * 7))
    assert codebook.all() and edited.sum() == 7
    p_values = paired_p_values(questions, codebook, edited)
    assert p_values == pytest.approx({"food": 2 / 2**8, "plant": 1.0})
    accuracy = {
        "codebook": accuracy_by_topic(questions, np.zeros(16, dtype=int)),
        "masked": accuracy_by_topic(questions, np.array([1] * 8 + [1] + [0] * 7)),
    }
    check = verdict(accuracy, "masked", "food", chance=0.5, p_values=p_values)
    assert check.worst_retained_topic == "plant" and check.worst_retained_loss == pytest.approx(12.5)
    assert check.forget_p_value == pytest.approx(2 / 2**8) and check.worst_retained_p_value == 1.0
    assert verdict(accuracy, "masked", "food", chance=0.5).forget_p_value is None
