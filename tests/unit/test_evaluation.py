"""Metrics against hand-computed values; evaluator variants agree with direct forwards."""

from __future__ import annotations

import math

import numpy as np
import torch

from codeunlearn.core.config import BottleneckConfig
from codeunlearn.data.batching import encode_texts, make_batches, token_nll
from codeunlearn.evaluation.evaluator import (
    KEYWORD_FREE,
    EvalReport,
    EvalSet,
    Evaluator,
    _per_example,
    group_means,
    normalized_drop,
    perplexity,
)
from codeunlearn.model.surgery import insert_bottleneck
from codeunlearn.unlearning.masks import apply_mask, mask_from_codes


def test_normalized_drop_hand_values():
    assert normalized_drop(base_nll=4.0, codebook_nll=3.0, edited_nll=3.8) == 0.7999999999999998
    assert normalized_drop(4.0, 3.0, 3.0) == 0.0
    assert normalized_drop(4.0, 3.0, 4.5) == 1.5  # past the base model
    assert math.isnan(normalized_drop(3.0, 3.0, 3.5))


def test_group_means_are_token_weighted():
    means = group_means(np.array([2.0, 6.0, 3.0]), np.array([1, 3, 3]), ["a", "a", "b"])
    assert means == {"a": 2.0, "b": 1.0}


def test_token_nll_ignores_padding_and_bos_prediction():
    logits = torch.zeros(1, 3, 4)
    logits[0, 0, 2] = math.log(3)  # p(token 2 | BOS) = 3/6
    batch = make_batches([[1, 2, 3]], 1, 0)[0]
    nll = token_nll(logits, batch)
    torch.testing.assert_close(nll, torch.tensor([[math.log(2), math.log(4)]]))
    padded = make_batches([[1, 2], [1, 2, 3]], 2, 0)[0]
    assert token_nll(torch.zeros(2, 3, 4), padded)[0, 1] == 0


def test_evaluator_matches_direct_forward(tiny_llama, tokenizer, texts):
    codebook_model = insert_bottleneck(
        tiny_llama, tokenizer, BottleneckConfig(layer=0, n_codes=16, top_k=2), "t"
    )
    batches = make_batches(encode_texts(tokenizer, texts, 32), 3, tokenizer.pad_token_id)
    evaluator = Evaluator(codebook_model, [EvalSet("forget", batches, ["food"] * 3 + ["other"] * 5)])
    mask = mask_from_codes(16, "x", [0, 1, 2])
    scores = evaluator.score_codebook(mask)

    apply_mask(codebook_model, mask)
    total, count = 0.0, 0
    with torch.no_grad():
        for batch in batches:
            logits = tiny_llama(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
            total += float(token_nll(logits, batch).sum())
            count += int(batch.attention_mask[:, 1:].sum())
    apply_mask(codebook_model, None)
    assert abs(scores["forget"] - total / count) < 1e-5
    assert {"forget:food", "forget:other"} <= scores.keys()
    assert not codebook_model.bottleneck.mask.any()  # the evaluator leaves no mask behind
    report = EvalReport(nll={"base": {"forget": 5.0}, "codebook": {"forget": 4.0}, "masked": {"forget": 4.9}})
    assert abs(report.drop("masked", "forget") - 0.9) < 1e-9


def test_perplexity_hand_values():
    # Next-token probabilities 1/2 and 1/4: mean NLL 1.5 ln 2, perplexity 2^1.5.
    logits = torch.full((1, 3, 4), -1e9)
    logits[0, 0, 2], logits[0, 0, 0] = 0.0, 0.0  # p(2 | BOS) = 1/2
    logits[0, 1, :] = 0.0  # p(3 | 2) = 1/4
    batch = make_batches([[1, 2, 3]], 1, 0)[0]
    mean_nll = float(token_nll(logits, batch).sum() / 2)
    assert abs(perplexity(mean_nll) - 2**1.5) < 1e-6  # float32 logits
    assert abs(perplexity(math.log(49152)) - 49152) < 1e-6  # uniform over the vocabulary
    assert perplexity(0.0) == 1.0


def test_score_from_scores_only_the_tokens_after_the_prompt():
    logits = torch.zeros(2, 4, 4)  # uniform: every predicted token costs ln 4
    batches = make_batches([[1, 2, 3, 0], [1, 2, 3]], 2, 0)
    eval_set = EvalSet("probe", batches, ["a", "b"], score_from=np.array([2, 2]))
    sums, counts = _per_example(eval_set, lambda index, batch: logits[: len(batch.rows)])
    # Tokens from index 2 on: two of example 0 (3 and 0), one of example 1 (its last, 3).
    np.testing.assert_allclose(counts, [2, 1])
    np.testing.assert_allclose(sums, [2 * math.log(4), math.log(4)])


def test_a_subset_is_scored_token_weighted_from_the_same_examples():
    eval_set = EvalSet("forget", [], ["forget"] * 3, subsets={KEYWORD_FREE: np.array([1, 2])})
    scores = Evaluator(None, [eval_set])._means({"forget": (np.array([2.0, 6.0, 3.0]), np.array([1, 3, 3]))})
    assert scores == {"forget": 11 / 7, KEYWORD_FREE: (6.0 + 3.0) / (3 + 3)}
    empty = EvalSet("forget", [], ["forget"] * 3, subsets={KEYWORD_FREE: np.array([], dtype=int)})
    assert KEYWORD_FREE not in Evaluator(None, [empty])._means({"forget": (np.ones(3), np.ones(3))})


def test_the_keyword_free_split_is_a_column_of_the_main_table_only_when_scored():
    nll = {
        "base": {"forget": 5.0, "retain": 3.0, KEYWORD_FREE: 6.0},
        "codebook": {"forget": 4.0, "retain": 2.0, KEYWORD_FREE: 5.0},
        "masked": {"forget": 4.5, "retain": 2.1, KEYWORD_FREE: 5.25},
        "random": {"forget": 4.1, "retain": 2.0, KEYWORD_FREE: 5.0},
    }
    rendered = EvalReport(nll=nll, notes=["forget_keyword_free: 3 of 9"]).render()
    assert "| forget_keyword_free NLL |" in rendered.splitlines()[1]
    assert "| masked | 4.5000 | 2.1000 | 5.2500 |" in rendered and "| 0.500 | 0.100 | 0.250 |" in rendered
    assert "keyword-free forget: masked drop 0.250 (forget 0.500), random codes 0.000" in rendered
    assert "\nforget_keyword_free: 3 of 9" in rendered
    without = {
        variant: {k: v for k, v in scores.items() if k != KEYWORD_FREE} for variant, scores in nll.items()
    }
    rendered = EvalReport(nll=without).render()
    assert "keyword_free" not in rendered and "| forget drop | retain drop |" in rendered


def test_the_report_shows_the_calibrated_size_its_frontier_and_test_result():
    nll = {
        "base": {"forget": 5.0, "retain": 3.0},
        "codebook": {"forget": 4.0, "retain": 2.0},
        "masked": {"forget": 4.5, "retain": 2.1},
        "random": {"forget": 4.1, "retain": 2.0},
    }
    frontier = [
        {"n_select": 4, "forget_drop": 0.2, "retain_drop": 0.0, "forget_nats": 0.2, "retain_nats": 0.0},
        {"n_select": 8, "forget_drop": 0.6, "retain_drop": 0.05, "forget_nats": 0.6, "retain_nats": 0.05},
    ]
    passed = {"chosen_n_select": 8, "best_n_select": 8, "reason": "", "frontier": frontier}
    tested = {**passed, "test": {"forget_drop": 0.5, "retain_drop": 0.1}}
    rendered = EvalReport(nll=nll, calibration=tested).render()
    section = rendered.split("## S' calibrated on the validation split\n")[1]
    assert section.startswith("S' = 8 chosen (2 sizes scored).")
    rows = [
        [c.strip() for c in line.strip("|").split("|")]
        for line in section.splitlines()
        if line[:3] == "| 4" or line[:3] == "| 8"
    ]
    assert rows == [["4", "0.200", "0.000", "", ""], ["8 (chosen)", "0.600", "0.050", "0.500", "0.100"]]

    missed = {**passed, "chosen_n_select": None, "reason": "best validation point S' = 8: forget drop"}
    rendered = EvalReport(nll=nll, calibration=missed).render()
    assert "No S' clears both gates (2 sizes scored): best validation point S' = 8" in rendered
    assert "S' = 8, the nearest miss, was selected" in rendered and "| 8 (selected) |" in rendered
    assert "test forget drop" not in rendered
    assert "calibrated" not in EvalReport(nll=nll).render()
