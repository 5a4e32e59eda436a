"""The topic detector: the logistic fit against a hand-solved optimum, its recall threshold, storage."""

from __future__ import annotations

import math

import numpy as np
import pytest

from codeunlearn.core.errors import CodeunlearnError
from codeunlearn.unlearning.topic_detector import TopicDetector, fit_at_recall, fit_logistic


def _bisect(gradient, low: float, high: float) -> float:
    for _ in range(200):
        middle = (low + high) / 2
        low, high = (middle, high) if gradient(middle) < 0 else (low, middle)
    return (low + high) / 2


def test_fit_matches_the_hand_solved_optimum():
    # x = -1 (other topic) and +1 (the topic): standardised to -+a with a = 1/sqrt(2) (sample std),
    # the bias is 0 by symmetry and the weight solves -a / (1 + exp(w a)) + l2 w = 0
    l2, a = 0.1, 1 / math.sqrt(2)
    expected = _bisect(lambda w: -a / (1 + math.exp(w * a)) + l2 * w, 0.0, 100.0)
    detector = fit_logistic(np.array([[-1.0], [1.0]]), np.array([0, 1]), l2=l2)
    assert detector.weight[0] == pytest.approx(expected, rel=1e-6)
    assert detector.bias == pytest.approx(0.0, abs=1e-8)
    assert detector.score(np.array([[1.0]]))[0] == pytest.approx(expected * a, rel=1e-6)


def test_class_balance_keeps_a_rare_topic_at_even_odds():
    # 1 topic row at +1 against 9 others at -1: balanced, each class weighs half, so the two points
    # score the same distance either side of 0 and the point between them scores 0 (unbalanced,
    # the 9 would pull it negative)
    features = np.array([[1.0]] + [[-1.0]] * 9)
    detector = fit_logistic(features, np.array([1] + [0] * 9), l2=0.1)
    assert detector.score(np.array([[0.0]]))[0] == pytest.approx(0.0, abs=1e-6)
    assert detector.score(np.array([[1.0]]))[0] == pytest.approx(-detector.score(np.array([[-1.0]]))[0])


def test_threshold_reaches_the_recall_on_held_out_folds():
    rng = np.random.default_rng(0)
    topic = rng.normal(3.0, 1.0, size=(200, 4))
    other = rng.normal(-3.0, 1.0, size=(400, 4))
    features, labels = np.concatenate([topic, other]), np.array([1] * 200 + [0] * 400, dtype=bool)
    detector, held_out = fit_at_recall(features, labels, recall=0.5)
    assert detector.recall == 0.5
    assert detector.threshold == pytest.approx(float(np.quantile(held_out[labels], 0.5)))
    assert np.mean(held_out[labels] >= detector.threshold) == pytest.approx(0.5, abs=0.01)
    assert not detector.flags(other).any()  # well separated: no other-topic row reaches it
    assert detector.flags(topic).mean() == pytest.approx(0.5, abs=0.1)


def test_save_and_load_give_the_same_scores(tmp_path):
    rng = np.random.default_rng(1)
    features = rng.normal(size=(50, 3))
    detector, _ = fit_at_recall(features, features[:, 0] > 0, recall=0.4)
    detector.save(tmp_path / "detector.json")
    loaded = TopicDetector.load(tmp_path / "detector.json")
    assert loaded == detector
    np.testing.assert_array_equal(loaded.score(features), detector.score(features))


def test_bad_inputs_are_refused_with_the_fix():
    detector = fit_logistic(np.array([[-1.0, 0.0], [1.0, 0.0]]), np.array([0, 1]))
    with pytest.raises(CodeunlearnError, match="2-wide"):
        detector.score(np.zeros((3, 5)))
    with pytest.raises(CodeunlearnError, match="both of the topic and of other topics"):
        fit_logistic(np.zeros((4, 2)), np.zeros(4))
    with pytest.raises(CodeunlearnError, match="recall"):
        fit_at_recall(np.zeros((4, 2)), np.array([0, 1, 0, 1]), recall=0.0)
