"""Membership-inference metrics against hand-computed values and direct log-softmax computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from codeunlearn.core.errors import CodeunlearnError
from codeunlearn.data.batching import encode_texts, make_batches
from codeunlearn.evaluation.privacy import (
    loss_scores,
    mia_auc,
    min_k_scores,
    per_token_logprobs,
    privleak,
    roc_auc,
)


def test_roc_auc_hand_values():
    # pairs (3,1) (3,2) (2,1) win, (2,2) ties: (3 + 0.5) / 4
    assert roc_auc([3, 2], [1, 2]) == 0.875
    assert roc_auc([5, 6], [1, 2, 3]) == 1.0
    assert roc_auc([1, 2, 3], [5, 6]) == 0.0
    assert roc_auc([2, 2], [2, 2, 2]) == 0.5


def test_roc_auc_matches_all_pairs_count():
    rng = np.random.default_rng(0)
    members, nonmembers = rng.integers(0, 5, 40), rng.integers(0, 5, 30)  # many ties
    wins = (members[:, None] > nonmembers[None, :]).sum() + 0.5 * (members[:, None] == nonmembers).sum()
    assert roc_auc(members, nonmembers) == pytest.approx(wins / (40 * 30), abs=1e-12)


def test_roc_auc_refuses_empty_or_nan():
    with pytest.raises(CodeunlearnError, match="member_scores is empty"):
        roc_auc([], [1.0])
    with pytest.raises(ValueError, match="nonmember_scores is empty"):  # CodeunlearnError is a ValueError
        roc_auc([1.0], [])
    with pytest.raises(CodeunlearnError, match="NaN"):
        roc_auc([1.0, float("nan")], [0.0])


def test_loss_and_min_k_scores_hand_values():
    logprobs = [np.array([-1.0, -5.0, -2.0, -4.0, -3.0]), np.array([-0.5])]
    np.testing.assert_array_equal(loss_scores(logprobs), [-3.0, -0.5])
    np.testing.assert_array_equal(min_k_scores(logprobs, k=0.4), [-4.5, -0.5])  # lowest 2 of 5: -5, -4
    np.testing.assert_array_equal(min_k_scores(logprobs, k=0.1), [-5.0, -0.5])  # at least one token
    np.testing.assert_array_equal(min_k_scores(logprobs, k=1.0), [-3.0, -0.5])
    with pytest.raises(CodeunlearnError, match="k=0"):
        min_k_scores(logprobs, k=0)
    with pytest.raises(CodeunlearnError, match="no scored token"):
        loss_scores([np.array([-1.0]), np.array([])])


def test_mia_auc_by_method():
    members = [np.array([-1.0, -1.0, -1.0, -1.0, -6.0]), np.full(5, -0.5)]  # means -2, -0.5; mins -6, -0.5
    nonmembers = [np.full(5, -2.5), np.full(5, -1.5)]
    assert mia_auc(members, nonmembers, method="loss") == 0.75  # -2 beats -2.5 only; -0.5 beats both
    assert mia_auc(members, nonmembers, method="min_k", k=0.2) == 0.5  # -6 beats neither
    with pytest.raises(CodeunlearnError, match="use one of loss, min_k"):
        mia_auc(members, nonmembers, method="zlib")


def test_privleak_is_relative_gap():
    assert privleak(0.6, 0.5) == pytest.approx(0.2)
    assert privleak(0.4, 0.5) == pytest.approx(-0.2)  # over-unlearning leaks too
    assert privleak(0.5, 0.5) == 0.0
    with pytest.raises(CodeunlearnError, match="auc_retrained=0"):
        privleak(0.5, 0)


def _direct_logprobs(model, ids: list[int]) -> np.ndarray:
    """One example alone, no padding: log_softmax of logits at t, gathered at token t+1."""
    input_ids = torch.tensor([ids])
    logits = model(input_ids=input_ids, attention_mask=torch.ones_like(input_ids)).logits
    logprobs = torch.log_softmax(logits[0, :-1].double(), dim=-1)
    return logprobs.gather(1, input_ids[0, 1:, None]).squeeze(1).numpy()


@torch.no_grad()
def test_per_token_logprobs_match_direct_computation(tiny_llama, tokenizer, texts):
    token_ids = encode_texts(tokenizer, texts[:5], 32)
    batches = make_batches(token_ids, 3, tokenizer.pad_token_id)
    assert any(not b.attention_mask.all() for b in batches)  # some rows are padded
    logprobs = per_token_logprobs(tiny_llama, batches)
    assert len(logprobs) == 5
    for ids, values in zip(token_ids, logprobs, strict=True):  # input order, padding cut off
        assert values.shape == (len(ids) - 1,)
        np.testing.assert_allclose(values, _direct_logprobs(tiny_llama, ids), atol=1e-4)
    via_callable = per_token_logprobs(
        lambda b: tiny_llama(input_ids=b.input_ids, attention_mask=b.attention_mask).logits, batches
    )
    for a, b in zip(logprobs, via_callable, strict=True):
        np.testing.assert_array_equal(a, b)
    assert all(math.isfinite(v) for values in logprobs for v in values)


@torch.no_grad()
def test_per_token_logprobs_refuse_batches_of_two_sets(tiny_llama, tokenizer, texts):
    first = make_batches(encode_texts(tokenizer, texts[:2], 16), 2, tokenizer.pad_token_id)
    second = make_batches(encode_texts(tokenizer, texts[2:4], 16), 2, tokenizer.pad_token_id)
    with pytest.raises(CodeunlearnError, match="repeated"):
        per_token_logprobs(tiny_llama, first + second)
