"""The outcome of a mask on its topic: drops beside raw nats, the codebook model's gain, the random control,
and the one gate check every caller uses; the gates' settings and the certificate built from them."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from codeunlearn.core.config import ConfigError, GatesConfig, RunConfig
from codeunlearn.core.errors import CodeunlearnError
from codeunlearn.evaluation import certificate
from codeunlearn.evaluation.outcome import TopicOutcome, random_control
from codeunlearn.unlearning.masks import Mask, MaskSource, mask_from_codes, save_mask

GATES = GatesConfig()  # 0.8 forget, 0.05 retain, 0.2 random share, 0.1 nats of gain
OPEN = GatesConfig(min_forget_drop=-1e9, max_retain_drop=1e9, max_random_share=1e9, min_gain=-1e9)


def outcome(
    forget_masked: float = 2.9,
    forget_random: float | None = 2.05,
    forget_base: float = 3.0,
    retain_masked: float = 2.02,
) -> TopicOutcome:
    """Codebook NLL 2.0 on both sets; base 3.0 on forget (gain 1 nat/token) and 2.5 on retain."""
    forget = {"base": forget_base, "codebook": 2.0, "masked": forget_masked}
    retain = {"base": 2.5, "codebook": 2.0, "masked": retain_masked}
    if forget_random is not None:
        forget["random"], retain["random"] = forget_random, 2.01
    return TopicOutcome(forget=forget, retain=retain)


def test_the_figures_of_hand_made_numbers():
    o = outcome()
    assert o.forget_drop == pytest.approx(0.9)  # 0.9 of the way back to the base model
    assert o.retain_drop == pytest.approx(0.04)  # 0.02 of the 0.5 nats the codebook model gained
    assert o.forget_nats == pytest.approx(0.9) and o.retain_nats == pytest.approx(0.02)
    assert o.gain == pytest.approx(1.0) and o.retain_gain == pytest.approx(0.5)
    assert o.random_nats == pytest.approx(0.05)
    assert o.random_share == pytest.approx(0.05 / 0.9)
    assert o.learned(0.1) and not o.learned(1.5)
    assert o.failures(GATES) == []


def test_random_share_is_nan_without_a_control_or_without_a_rise():
    assert math.isnan(outcome(forget_random=None).random_share)
    assert math.isnan(outcome(forget_masked=2.0).random_share)  # the mask raises nothing to share
    assert math.isnan(outcome(forget_masked=1.8).random_share)  # ... or lowers forget NLL
    assert outcome(forget_random=1.9).random_share == pytest.approx(-0.1 / 0.9)  # chance helped


def test_not_learned_fails_with_the_gain_in_nats():
    # the codebook model is 0.03 nats/token better than the base: a drop of 1.0 here is 0.03 nats
    o = outcome(forget_base=2.03, forget_masked=2.03, forget_random=2.0)
    assert o.forget_drop == pytest.approx(1.0)
    assert o.failures(GATES) == [
        "not learned: the codebook model gains 0.030 nats/token over the base model on the topic "
        "(< gates.min_gain 0.1)"
    ]
    assert not o.learned(0.1) and o.learned(0.01)


def test_forget_and_retain_reasons_give_the_ratio_and_the_raw_nats():
    assert outcome(forget_masked=2.5).failures(GATES) == [
        "forget drop 0.500 (+0.5000 nats/token) < gates.min_forget_drop 0.8"
    ]
    assert outcome(retain_masked=2.1).failures(GATES) == [
        "retain drop 0.200 (+0.1000 nats/token) > gates.max_retain_drop 0.05"
    ]


def test_random_control_reason():
    o = outcome(forget_masked=3.0, forget_random=2.31)
    assert o.random_share == pytest.approx(0.31)
    assert o.failures(GATES) == [
        "random control: a random mask of the same size gives 0.31 of the mined mask's forget rise "
        "(> gates.max_random_share 0.2)"
    ]
    assert outcome(forget_random=None).failures(GATES) == [
        "random control: no random mask of the same size was scored"
    ]
    # without a rise the random share is moot: the forget gate is what fails
    assert outcome(forget_masked=2.0, forget_random=2.5).failures(GATES) == [
        "forget drop 0.000 (+0.0000 nats/token) < gates.min_forget_drop 0.8"
    ]


def test_a_nan_drop_fails_with_its_cause():
    flat = outcome(forget_base=2.0, forget_masked=2.5, forget_random=2.0)  # no gain at all
    assert math.isnan(flat.forget_drop)
    assert flat.failures(GATES) == [
        "not learned: the codebook model gains 0.000 nats/token over the base model on the topic "
        "(< gates.min_gain 0.1)",
        "forget drop is not a number (+0.5000 nats/token; the codebook model gains 0.0000 nats/token over "
        "the base model on the forget set, nothing to normalise by), so it cannot clear "
        "gates.min_forget_drop 0.8",
    ]
    assert flat.failures(OPEN)[0].startswith("forget drop is not a number")  # NaN passes no gate
    broken = outcome(forget_masked=math.nan)
    assert broken.failures(GATES)[0] == (
        "forget drop is not a number (+nan nats/token; an NLL is not a number), so it cannot clear "
        "gates.min_forget_drop 0.8"
    )


def test_open_gates_pass_everything_measurable():
    awful = outcome(forget_base=2.01, forget_masked=2.0, forget_random=2.5, retain_masked=4.0)
    assert len(awful.failures(GATES)) == 3
    assert awful.failures(OPEN) == []


def test_metrics_and_tags_carry_raw_nats_gain_learned_and_random_share():
    o = outcome()
    metrics = o.metrics(GATES)
    assert metrics["forget_nll_masked"] == 2.9 and metrics["retain_nll_random"] == 2.01
    assert metrics["forget_nats"] == pytest.approx(0.9) and metrics["gain"] == pytest.approx(1.0)
    assert metrics["learned"] == 1.0 and metrics["random_share"] == pytest.approx(0.05 / 0.9)
    assert {"forget_drop", "retain_drop", "retain_nats", "random_nats"} <= set(metrics)
    assert not any("_nll_" in key for key in o.metrics(GATES, nll=False))
    assert o.metrics(GatesConfig(min_gain=2.0))["learned"] == 0.0
    tags = o.tags(GATES)
    assert tags["gates"] == "passed" and tags["learned"] == "true"
    assert (tags["forget_nats"], tags["gain"], tags["random_share"]) == ("+0.9000", "1.0000", "0.0556")
    assert outcome(forget_masked=2.5).tags(GATES)["gates"].startswith("forget drop 0.500 (+0.5000")


def test_from_nll_reads_forget_and_retain_of_the_known_variants():
    nll = {
        variant: {"forget": value, "retain": 2.0, "retain:noun.plant": 9.0}
        for variant, value in (("base", 3.0), ("codebook", 2.0), ("masked", 2.9), ("random", 2.1))
    }
    nll["mined@8"] = {"forget": 7.0, "retain": 7.0}
    o = TopicOutcome.from_nll(nll)
    assert dict(o.forget) == {"base": 3.0, "codebook": 2.0, "masked": 2.9, "random": 2.1}
    assert o.random_share == pytest.approx(0.1 / 0.9)
    del nll["masked"]
    with pytest.raises(CodeunlearnError, match="no masked NLL"):
        TopicOutcome.from_nll(nll)


def test_summary_shows_raw_nats_and_says_not_learned():
    learned = outcome().summary(GATES)
    assert "forget drop 0.900 (+0.9000 nats/token" in learned and "retain drop 0.040 (+0.0200" in learned
    assert "+0.0500 nats/token, 0.06 of its rise" in learned and "Not learned" not in learned
    assert "Not learned: the codebook model gains 0.030" in outcome(forget_base=2.03).summary(GATES)
    assert "no rise of the mined mask to compare" in outcome(forget_masked=2.0).summary(GATES)


def test_random_control_draws_outside_the_mask():
    mask = mask_from_codes(64, "req-1", list(range(0, 64, 2)))  # every even code
    control = random_control(mask, 8, seed=3)
    assert len(control.code_ids) == 8 and all(code % 2 == 1 for code in control.code_ids)
    assert control.sources[0].name == "random" and control.n_codes == 64
    assert control.code_ids == random_control(mask, 8, seed=3).code_ids  # a function of the seed
    assert random_control(mask, 0, seed=3).code_ids == ()
    # a mask holding most of a small codebook: the control takes every code left, never a mined one
    assert random_control(mask, 33, seed=3).code_ids == tuple(range(1, 64, 2))


def test_gate_defaults_and_validation():
    assert (GATES.min_forget_drop, GATES.max_retain_drop, GATES.max_random_share, GATES.min_gain) == (
        0.8,
        0.05,
        0.2,
        0.1,
    )
    GATES.validate()
    OPEN.validate()  # wide open loads
    for gates, message in (
        (GatesConfig(min_forget_drop=1.5), "gates.min_forget_drop=1.5: set it to 1 or less"),
        (GatesConfig(max_retain_drop=-0.1), "gates.max_retain_drop=-0.1: set it to 0 or more"),
        (GatesConfig(max_random_share=-0.1), "gates.max_random_share=-0.1: set it to 0 or more"),
        (GatesConfig(min_gain=math.nan), "gates.min_gain=nan: give a number"),
        (GatesConfig(max_random_share=math.nan), "gates.max_random_share=nan: give a number"),
    ):
        with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
            gates.validate()


def test_the_certificate_records_raw_figures_and_old_certificates_still_verify(tmp_path: Path):
    config = RunConfig(run_dir=str(tmp_path))
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "codebook_config.json").write_text("{}")
    mask = Mask(n_codes=16, sources=(MaskSource(name="noun.food", code_ids=(1, 2, 3)),))
    (tmp_path / "masks").mkdir()
    save_mask(mask, tmp_path / "masks" / "active.json")
    nll = {
        name: {"forget": forget, "retain": retain}
        for name, forget, retain in (
            ("base", 3.0, 2.5),
            ("codebook", 2.0, 2.0),
            ("masked", 2.5, 2.02),
            ("random", 2.05, 2.01),
        )
    }
    built = certificate.build(config, {"mask_digest": mask.digest, "nll": nll}, artifacts={})

    evaluation = built["evaluation"]
    assert evaluation["forget_drop"] == pytest.approx(0.5) and evaluation["forget_nats"] == pytest.approx(0.5)
    assert evaluation["gain"] == pytest.approx(1.0) and evaluation["learned"] is True
    assert evaluation["random_share"] == pytest.approx(0.1)
    assert evaluation["gates"]["failures"] == [
        "forget drop 0.500 (+0.5000 nats/token) < gates.min_forget_drop 0.8"
    ]
    assert (evaluation["gates"]["max_random_share"], evaluation["gates"]["min_gain"]) == (0.2, 0.1)
    assert certificate.verify(built, tmp_path) == []
    # a certificate written before the raw figures existed holds only the first evaluation keys
    old_keys = ("nll", "forget_drop", "retain_drop")
    old = built | {
        "evaluation": {k: evaluation[k] for k in old_keys}
        | {"gates": {"min_forget_drop": 0.5, "max_retain_drop": 0.1, "failures": []}}
    }
    assert certificate.verify(old, tmp_path) == []
