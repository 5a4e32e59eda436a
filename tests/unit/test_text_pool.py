"""The text pool scores held-out texts once and rescores only where a mask meets their codes, giving
the same NLL as a full forward with the mask in force."""

from __future__ import annotations

import pytest
import torch

from codeunlearn.core.config import BottleneckConfig
from codeunlearn.data.batching import encode_texts, make_batches
from codeunlearn.evaluation.evaluator import EvalSet, Evaluator
from codeunlearn.evaluation.text_pool import TextPool
from codeunlearn.model.surgery import insert_bottleneck
from codeunlearn.unlearning.masks import mask_from_codes
from tests.conftest import make_tiny


@pytest.fixture
def pool_and_evaluator(tokenizer, texts):
    model = make_tiny("llama", len(tokenizer), n_layers=3)
    codebook_model = insert_bottleneck(model, tokenizer, BottleneckConfig(layer=1, n_codes=64, top_k=2), "t")
    base = make_tiny("llama", len(tokenizer), n_layers=3)
    pool = TextPool(codebook_model, base, max_length=32, batch_size=3)
    ids = [f"t{i}" for i in range(len(texts))]
    assert pool.add(ids, texts) == len(texts)
    batches = make_batches(encode_texts(tokenizer, texts, 32), 3, tokenizer.pad_token_id)
    evaluator = Evaluator(codebook_model, [EvalSet("all", batches, ["x"] * len(texts))])
    return pool, evaluator, ids, base


def test_pool_scores_equal_full_forwards(pool_and_evaluator):
    pool, evaluator, ids, base = pool_and_evaluator
    assert pool.codebook(ids).mean() == pytest.approx(evaluator.score_codebook(None)["all"], abs=1e-5)
    assert pool.base(ids).mean() == pytest.approx(evaluator.score_model(base)["all"], abs=1e-5)
    for codes in ([0, 1, 2, 3], list(range(0, 64, 3))):
        mask = mask_from_codes(64, "m", codes)
        assert pool.masked(ids, mask).mean() == pytest.approx(evaluator.score_codebook(mask)["all"], abs=1e-5)


def test_only_texts_whose_codes_the_mask_holds_are_rescored(pool_and_evaluator):
    pool, _, ids, _ = pool_and_evaluator
    one_text_codes = pool._codes[0]
    unused = sorted(set(range(64)) - {int(c) for codes in pool._codes for c in codes})
    if unused:  # a mask of codes no text chose changes nothing and runs nothing
        before = pool.rescored_texts
        scores = pool.masked(ids, mask_from_codes(64, "m", unused))
        assert pool.rescored_texts == before
        assert scores.mean() == pool.codebook(ids).mean()
    before = pool.rescored_texts
    pool.masked(ids, mask_from_codes(64, "m", [int(one_text_codes[0])]))
    hit = sum(int(one_text_codes[0]) in set(codes.tolist()) for codes in pool._codes)
    assert pool.rescored_texts - before == hit < len(ids) + 1


def test_adding_known_ids_scores_nothing_and_rows_keep_their_order(pool_and_evaluator, texts):
    pool, _, ids, _ = pool_and_evaluator
    assert pool.add(ids[:2], texts[:2]) == 0
    reversed_scores = pool.codebook(ids[::-1])
    assert list(reversed_scores.sums) == list(pool.codebook(ids).sums[::-1])
    with pytest.raises(KeyError):
        pool.rows(["never-added"])
    assert torch.is_tensor(pool._hidden[0])


def test_base_scores_from_the_shared_lower_layers_equal_full_forwards(tokenizer, texts):
    model = make_tiny("llama", len(tokenizer), n_layers=3)
    codebook_model = insert_bottleneck(model, tokenizer, BottleneckConfig(layer=1, n_codes=64, top_k=2), "t")
    base = make_tiny("llama", len(tokenizer), n_layers=3)  # the same seeded weights: lower layers shared
    ids = [f"t{i}" for i in range(len(texts))]
    full = TextPool(codebook_model, base, max_length=32, batch_size=3)
    shared = TextPool(codebook_model, base, max_length=32, batch_size=3, shared_lower=True)
    full.add(ids, texts)
    shared.add(ids, texts)
    assert shared.base(ids).sums == pytest.approx(full.base(ids).sums, abs=1e-4)
