"""Text-conditioned masking (bottleneck.mask_condition=text): the gates everywhere, and every masked
code from the token where a detector flags the mean of the text's inputs so far; checked against a
hand computation, across cached decoding, and through the sweep's pieces (detector fit, random control)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from codeunlearn.core.config import BottleneckConfig, load_config
from codeunlearn.core.errors import ConfigError
from codeunlearn.evaluation.outcome import random_control
from codeunlearn.model.bottleneck import NO_CODE, CodebookBottleneck
from codeunlearn.unlearning.masks import mask_from_codes
from codeunlearn.unlearning.topic_detector import TopicDetector, fit_text_detector

D = 16
GATE = 4  # = top_k: the gates alone empty a token only where all its codes are masked


def conditioned(condition: str = "text", detect_after: int = 2) -> CodebookBottleneck:
    torch.manual_seed(0)
    config = BottleneckConfig(
        n_codes=32,
        top_k=4,
        mask_policy="zero",
        mask_gate=GATE,
        mask_condition=condition,
        mask_detect_after=detect_after,
    )
    return CodebookBottleneck(D, config)


def feature_zero_detector(threshold: float = 0.5) -> TopicDetector:
    """Flags a mean input whose feature 0 is at or above `threshold`."""
    weight = [4.0] + [0.0] * (D - 1)
    return TopicDetector(
        mean=(1.0,) * D, std=(2.0,) * D, weight=tuple(weight), bias=0.0, threshold=2 * (threshold - 1)
    )


def texts_input() -> torch.Tensor:
    """Two rows of 8 tokens (BOS first). Row 0's feature 0 after BOS runs 0, 1.2, 0.9, ...: running
    means 0, 0.6 (token 2: flagged), so tokens 2.. lose their masked codes. Row 1 runs 2.0, 0, 0, ...:
    its mean is 2.0 at token 1 but detect_after=2 holds it, and from token 2 on it stays under 0.5
    but for token 2 (mean 1.0): flagged at 2 and for good."""
    torch.manual_seed(1)
    x = torch.randn(2, 8, D)
    x[:, :, 0] = 0.0
    x[0, 1:4, 0] = torch.tensor([0.0, 1.2, 0.9])
    x[1, 1, 0] = 2.0
    x[0, 0, 0] = x[1, 0, 0] = 50.0  # BOS is never read
    return x


def masked_everywhere(bottleneck: CodebookBottleneck, x: torch.Tensor) -> torch.Tensor:
    codes = bottleneck(x).codes[:, 1:].flatten()
    return codes.bincount(minlength=32).topk(10).indices


def test_the_masked_codes_go_from_the_token_the_detector_flags_the_text_so_far():
    bottleneck, plain = conditioned(), conditioned("none")
    x = texts_input()
    unmasked = bottleneck(x).codes
    masked_codes = masked_everywhere(bottleneck, x)
    for b in (bottleneck, plain):
        b.set_masked(masked_codes)
    bottleneck.set_detectors([feature_zero_detector().as_linear()])
    gated = plain(x).codes  # the gates alone
    out = bottleneck(x).codes

    is_masked = torch.isin(unmasked, masked_codes) & (unmasked != NO_CODE)
    expected = gated.clone()
    expected[:, 2:] = unmasked[:, 2:].masked_fill(is_masked[:, 2:], NO_CODE)  # both rows flagged at token 2
    assert torch.equal(out, expected)
    assert is_masked[:, 2:].any() and not torch.equal(out, gated)  # the detector changed something
    assert torch.equal(out[:, :2], gated[:, :2])  # before the flag: the gates alone


def test_a_text_the_detector_never_flags_keeps_the_gates_alone():
    x = texts_input()
    x[:, 1:, 0] = 0.0
    bottleneck, plain = conditioned(), conditioned("none")
    masked_codes = masked_everywhere(bottleneck, x)
    for b in (bottleneck, plain):
        b.set_masked(masked_codes)
    bottleneck.set_detectors([feature_zero_detector().as_linear()])
    assert torch.equal(bottleneck(x).codes, plain(x).codes)


def test_detect_after_holds_the_flag_until_enough_tokens_are_read():
    x = texts_input()
    x[1, 1:, 0] = torch.tensor([2.0, 0, 0, 0, 0, 0, 0])  # mean 2.0, 1.0, 0.67, 0.5, 0.4, ...
    masked_codes = masked_everywhere(conditioned(), x)
    plain = conditioned("none")
    plain.set_masked(masked_codes)
    gated = plain(x).codes[1]
    flagged_from = {}
    for after in (1, 4, 6):
        bottleneck = conditioned(detect_after=after)
        bottleneck.set_masked(masked_codes)
        bottleneck.set_detectors([feature_zero_detector().as_linear()])
        out = bottleneck(x).codes[1]
        lost = (out != gated).any(-1).nonzero().flatten().tolist()  # where more than the gates went
        flagged_from[after] = lost[0] if lost else None
    # flagged at token 1 (mean 2.0), at token 4 (mean 0.5, the first one read with 4 tokens), never
    # with 6 (means under 0.5 from token 5)
    assert flagged_from[1] == 1 and flagged_from[4] == 4 and flagged_from[6] is None


def test_the_reading_is_carried_across_cached_decoding_steps():
    x = texts_input()
    bottleneck = conditioned()
    bottleneck.set_masked(masked_everywhere(bottleneck, x))
    bottleneck.set_detectors([feature_zero_detector().as_linear()])
    whole = bottleneck(x)
    steps = [bottleneck(x[:, :2], torch.arange(2).expand(2, -1))]  # the flag comes after the prompt
    for position in range(2, 8):
        steps.append(bottleneck(x[:, position : position + 1], torch.full((2, 1), position)))
    assert torch.equal(torch.cat([s.codes for s in steps], dim=1), whole.codes)
    torch.testing.assert_close(torch.cat([s.hidden for s in steps], dim=1), whole.hidden)


def test_text_condition_settings_are_checked():
    with pytest.raises(ConfigError, match="mask_policy=zero"):
        BottleneckConfig(mask_condition="text").validate()
    with pytest.raises(ConfigError, match="mask_detect_after"):
        BottleneckConfig(mask_policy="zero", mask_condition="text", mask_detect_after=0).validate()
    with pytest.raises(ConfigError, match="detector_recall"):
        load_config(None, ["bottleneck.mask_policy=zero", "bottleneck.mask_condition=text"]).validate()
    load_config(
        None,
        ["bottleneck.mask_policy=zero", "bottleneck.mask_condition=text", "mining.detector_recall=0.9"],
    ).validate()


def test_the_random_control_acts_where_the_mined_mask_does():
    detector = feature_zero_detector()
    mined = mask_from_codes(32, "topic", [1, 2, 3], detector=detector)
    control = random_control(mined, 3, seed=0)
    assert control.detectors == {"random": detector}
    assert not set(control.code_ids) & {1, 2, 3}
    plain = random_control(mask_from_codes(32, "topic", [1, 2, 3]), 3, seed=0)
    assert plain.detectors == {} and plain.code_ids == control.code_ids


def test_a_text_detector_separates_the_topic_at_the_recall_asked():
    rng = np.random.default_rng(0)
    topic = rng.normal(size=(200, 8)) + np.eye(8)[0] * 1.5
    others = rng.normal(size=(800, 8))
    detector = fit_text_detector(topic, others, recall=0.9)
    assert detector.recall == 0.9
    assert 0.8 <= detector.flags(rng.normal(size=(2000, 8)) + np.eye(8)[0] * 1.5).mean() <= 0.97
    assert detector.flags(rng.normal(size=(2000, 8))).mean() < 0.5
    with pytest.raises(Exception, match="at least 10 texts of the topic"):
        fit_text_detector(topic[:5], others, recall=0.9)
