"""Prompt-conditioned masking (bottleneck.mask_condition=prompt): which slots the bottleneck empties,
checked against a hand computation; its cached decoding; the mask's detectors and their digests."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from codeunlearn.core.config import BottleneckConfig, load_config
from codeunlearn.core.errors import CodeunlearnError, ConfigError
from codeunlearn.model.bottleneck import NO_CODE, CodebookBottleneck
from codeunlearn.model.surgery import insert_bottleneck
from codeunlearn.unlearning.masks import check_detectors, load_mask, mask_from_codes, save_mask
from codeunlearn.unlearning.topic_detector import (
    TopicDetector,
    fit_prompt_detector,
    prompt_features,
    prompt_of,
    prompt_set,
)

from ..conftest import make_tiny

D = 16


def conditioned(condition: str = "prompt") -> CodebookBottleneck:
    torch.manual_seed(0)
    config = BottleneckConfig(n_codes=32, top_k=4, mask_policy="zero", mask_condition=condition)
    return CodebookBottleneck(D, config)


def feature_zero_detector(threshold: float = 0.5) -> TopicDetector:
    """Flags a prompt whose mean input has feature 0 at or above `threshold` (standardised by
    mean 1, std 2 and weighted 4, so `as_linear` has something to fold)."""
    weight = [4.0] + [0.0] * (D - 1)
    return TopicDetector(
        mean=(1.0,) * D, std=(2.0,) * D, weight=tuple(weight), bias=0.0, threshold=2 * (threshold - 1)
    )


def prompts_input() -> torch.Tensor:
    """Two rows of 7 tokens (BOS first). Row 0's prompt is tokens 1-2, feature 0 = 1.0 and 0.4
    (mean 0.7: flagged); row 1's is tokens 1-3, 0.2, 0.3, 0.4 (mean 0.3: not flagged), its
    continuation far above the threshold, which must not count."""
    torch.manual_seed(1)
    x = torch.randn(2, 7, D)
    x[0, 1:3, 0] = torch.tensor([1.0, 0.4])
    x[1, 1:4, 0] = torch.tensor([0.2, 0.3, 0.4])
    x[1, 4:, 0] = 5.0
    return x


def test_as_linear_flags_exactly_what_the_detector_flags():
    detector = feature_zero_detector()
    features = np.random.default_rng(0).normal(size=(200, D))
    weight, offset = detector.as_linear()
    np.testing.assert_array_equal(features @ weight + offset >= 0, detector.flags(features))
    assert detector.flags(np.eye(D)[:1] * 0.5)[0] and not detector.flags(np.eye(D)[:1] * 0.49)[0]


def test_a_flagged_prompt_loses_every_code_there_and_the_masked_codes_after_it():
    bottleneck = conditioned()
    x = prompts_input()
    unmasked = bottleneck(x).codes  # (2, 7, 4), NO_CODE at BOS
    masked_codes = unmasked[:, 1:].flatten().bincount(minlength=32).topk(8).indices
    bottleneck.set_masked(masked_codes)
    bottleneck.set_detectors([feature_zero_detector().as_linear()])
    with bottleneck.prompted(torch.tensor([3, 4])):
        out = bottleneck(x)

    is_masked = torch.isin(unmasked, masked_codes)
    expected = unmasked.clone()
    expected[0, 1:3] = NO_CODE  # row 0 flagged: its whole prompt emptied
    expected[0, 3:] = unmasked[0, 3:].masked_fill(is_masked[0, 3:], NO_CODE)  # then the mask's codes
    assert torch.equal(out.codes, expected)
    # Row 1 is not flagged, so it is served unmasked although it chose masked codes.
    assert is_masked[1, 1:].any()
    torch.testing.assert_close(out.hidden[1], conditioned()(x).hidden[1])


def test_a_one_token_prompt_is_scored_and_bos_alone_is_no_prompt():
    bottleneck = conditioned()
    x = prompts_input()
    x[:, 0, 0] = 9.0  # BOS is never part of the prompt
    x[0, 1, 0] = 1.0
    unmasked = bottleneck(x).codes
    bottleneck.set_masked(unmasked[:, 1:].flatten().bincount(minlength=32).topk(8).indices)
    # at -1 an empty prompt's mean (zeros) would be flagged, were it scored at all
    bottleneck.set_detectors([feature_zero_detector(threshold=-1.0).as_linear()])
    with bottleneck.prompted(torch.tensor([2, 1])):
        codes = bottleneck(x).codes
    assert (codes[0, 1] == NO_CODE).all()  # row 0: its one prompt token, flagged
    assert torch.equal(codes[1], unmasked[1])  # row 1: no prompt, nothing flagged


def test_without_a_prompt_the_configured_gates_apply():
    x = prompts_input()
    bottleneck, plain = conditioned(), conditioned("none")
    masked_codes = bottleneck(x).codes[:, 1:].flatten().bincount(minlength=32).topk(8).indices
    for b in (bottleneck, plain):
        b.set_masked(masked_codes)
    bottleneck.set_detectors([feature_zero_detector().as_linear()])
    assert torch.equal(bottleneck(x).codes, plain(x).codes)  # scored text: no prompt, gate 1
    with plain.prompted(torch.tensor([3, 4])):  # the condition "none" ignores prompts
        assert torch.equal(plain(x).codes, bottleneck(x).codes)


def test_the_flag_is_carried_across_cached_decoding_steps():
    x = prompts_input()
    x[1, 1:3, 0] = 2.0  # both rows' 2-token prompts flagged
    bottleneck = conditioned()
    masked_codes = bottleneck(x).codes[:, 1:].flatten().bincount(minlength=32).topk(8).indices
    bottleneck.set_masked(masked_codes)
    bottleneck.set_detectors([feature_zero_detector().as_linear()])
    with bottleneck.prompted(torch.tensor([3, 3])):
        whole = bottleneck(x)
    with bottleneck.prompted():  # generation: the first forward is the prompt, then one token a step
        steps = [bottleneck(x[:, :3], torch.arange(3).expand(2, -1))]
        for position in range(3, 7):
            steps.append(bottleneck(x[:, position : position + 1], torch.full((2, 1), position)))
    assert torch.equal(torch.cat([s.codes for s in steps], dim=1), whole.codes)
    torch.testing.assert_close(torch.cat([s.hidden for s in steps], dim=1), whole.hidden)
    assert (whole.codes[:, 1:3] == NO_CODE).all()


def test_prompt_condition_without_a_detector_refuses_to_guess():
    bottleneck = conditioned()
    bottleneck.set_masked(torch.tensor([0, 1]))
    with bottleneck.prompted(), pytest.raises(CodeunlearnError, match="mining.detector_recall"):
        bottleneck(prompts_input())


def test_prompt_condition_settings_are_checked():
    with pytest.raises(ConfigError, match="mask_policy=zero"):
        BottleneckConfig(mask_condition="prompt").validate()
    with pytest.raises(ConfigError, match="mask_condition"):
        BottleneckConfig(mask_policy="zero", mask_condition="always").validate()
    with pytest.raises(ConfigError, match="detector_recall"):
        load_config(None, ["bottleneck.mask_policy=zero", "bottleneck.mask_condition=prompt"]).validate()
    with pytest.raises(ConfigError, match="detector_recall"):
        load_config(None, ["mining.detector_recall=1.5"]).validate()


def test_a_masks_detectors_are_saved_hashed_and_checked(tmp_path):
    detector = feature_zero_detector()
    plain = mask_from_codes(32, "food", [1, 2])
    with_detector = mask_from_codes(32, "food", [1, 2], detector=detector)
    other_detector = mask_from_codes(
        32, "food", [1, 2], detector=dataclasses.replace(detector, threshold=0.0)
    )
    assert len({plain.digest, with_detector.digest, other_detector.digest}) == 3
    save_mask(with_detector, tmp_path / "mask.json")
    loaded = load_mask(tmp_path / "mask.json")
    assert loaded == with_detector and loaded.digest == with_detector.digest
    check_detectors(with_detector)
    check_detectors(plain)  # no detector at all: scored on text without prompts
    with pytest.raises(CodeunlearnError, match="carry no topic detector"):
        check_detectors(with_detector.union(mask_from_codes(32, "request-1", [3])))


def test_prompt_of_takes_the_text_through_its_first_colon():
    assert prompt_of("apple pie: a pie: with apples") == "apple pie:"
    assert prompt_of("no colon here") is None and prompt_of(": starts with one") is None


def test_a_corpus_without_prompts_is_refused_before_any_model_runs():
    texts = [f"a sentence about food number {i}" for i in range(20)]
    with pytest.raises(CodeunlearnError, match="mining.detector_recall=0"):
        fit_prompt_detector(None, texts, ["other: text"], 0.35, 32)
    with pytest.raises(CodeunlearnError, match="'term: definition'"):
        fit_prompt_detector(None, [f"food {i}: a dish" for i in range(20)], texts, 0.35, 32)


def test_negatives_computed_once_give_the_detector_their_texts_give(tokenizer):
    torch.manual_seed(0)
    config = BottleneckConfig(n_codes=32, top_k=4, layer=0)
    model = insert_bottleneck(make_tiny("llama", len(tokenizer)), tokenizer, config, "t")
    topic = [f"{dish} {i}: a dish to eat" for i, dish in enumerate(["soup", "stew", "bread"] * 5)]
    others = [f"{thing} {i}: a thing" for i, thing in enumerate(["hammer", "river", "oak", "cat"] * 10)]
    others += ["a text without a prompt"]
    negatives = prompt_set(model, others, 32)
    assert negatives.n_texts == 41 and len(negatives.prompts) == 40
    np.testing.assert_allclose(
        negatives.features, prompt_features(model, [prompt_of(t) for t in others[:40]], 32), atol=1e-5
    )
    from_texts = fit_prompt_detector(model, topic, others, 0.5, 32)
    from_set = fit_prompt_detector(model, topic, negatives, 0.5, 32)
    np.testing.assert_allclose(from_set.weight, from_texts.weight, atol=1e-4)
    assert from_set.threshold == pytest.approx(from_texts.threshold, abs=1e-4)
    # the set's features are what is fitted on, not recomputed from its prompts
    moved = dataclasses.replace(negatives, features=negatives.features + 3.0)
    assert fit_prompt_detector(model, topic, moved, 0.5, 32).mean != pytest.approx(from_set.mean)
