"""Gradient baselines on a tiny random Llama with the real tokenizer: a few steps each, seconds in all."""

from __future__ import annotations

import copy
import dataclasses
import math
import re

import pytest
import torch

from codeunlearn.baselines.fine_tuning import mean_nll, reference_logprobs, sequence_logprobs
from codeunlearn.baselines.registry import (
    BASELINE_METHODS,
    get_method,
    method_names,
    reads_retain,
    unlearn_with_gradients,
)
from codeunlearn.core.config import GRADIENT_METHODS, BaselineConfig, load_config
from codeunlearn.core.errors import ConfigError
from codeunlearn.data.batching import encode_texts, make_batches

# lr far above the real default: 2-3 steps on a random model must move the NLL measurably.
FAST = BaselineConfig(lr=1e-3, epochs=3)


@torch.no_grad()
def _nll(model, batches) -> float:
    return sum(mean_nll(model, b).item() for b in batches) / len(batches)


def _nll_change(model, forget, retain, config) -> tuple[float, float]:
    forget_before, retain_before = _nll(model, forget), _nll(model, retain)
    unlearn_with_gradients(model, forget, retain, config)
    return _nll(model, forget) - forget_before, _nll(model, retain) - retain_before


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"method": "dpo"}, "baseline.method='dpo': use one of ga, graddiff, npo, rmu"),
        ({"rmu_layer": -1}, "baseline.rmu_layer=-1: give a decoder layer index"),
        ({"rmu_steering": 0.0}, "baseline.rmu_steering=0.0: set it above 0"),
        ({"lr": 0.0}, "baseline.lr=0.0: set it above 0"),
        ({"epochs": -1}, "baseline.epochs=-1: set it above 0"),
        ({"beta": 0}, "baseline.beta=0"),
        ({"retain_coef": -1.0}, "baseline.retain_coef=-1.0: set it to 0 or more"),
    ],
)
def test_bad_config_is_refused(changes, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        dataclasses.replace(BaselineConfig(), **changes).validate()


def test_methods_are_registered_and_defaults_valid():
    assert method_names() == ["ga", "graddiff", "npo", "rmu"]
    BaselineConfig().validate()


def test_the_registry_holds_exactly_the_methods_the_config_accepts():
    # The config checks unlearn.method against its own tuple, without importing torch or the registry.
    assert tuple(method_names()) == GRADIENT_METHODS
    assert set(BASELINE_METHODS) == set(GRADIENT_METHODS)
    for name in GRADIENT_METHODS:
        load_config(None, [f"unlearn.method={name}"])  # every registered method passes config load


def test_an_unregistered_method_is_refused_listing_the_registered_ones():
    with pytest.raises(
        ConfigError, match=re.escape("'dpo' is not registered: use one of ga, graddiff, npo, rmu")
    ):
        get_method("dpo")


@pytest.mark.parametrize(
    ("method", "retain_coef", "expected"),
    [
        ("ga", 1.0, False),
        ("graddiff", 1.0, True),
        ("graddiff", 0.0, False),
        ("npo", 1.0, True),
        ("npo", 0.0, False),
        ("rmu", 0.0, True),  # its retain term holds retain activations, whatever retain_coef says
    ],
)
def test_which_methods_read_retain_batches(method, retain_coef, expected):
    assert reads_retain(BaselineConfig(method=method, retain_coef=retain_coef)) is expected


def test_retain_term_without_retain_batches_is_refused(tiny_llama, forget_retain):
    forget, _ = forget_retain
    with pytest.raises(ConfigError, match="needs retain batches"):
        unlearn_with_gradients(tiny_llama, forget, [], dataclasses.replace(FAST, method="graddiff"))
    unlearn_with_gradients(tiny_llama, forget, [], dataclasses.replace(FAST, method="npo", retain_coef=0.0))


def test_ga_raises_forget_nll_and_hurts_retain(tiny_llama, forget_retain):
    forget_change, retain_change = _nll_change(
        tiny_llama, *forget_retain, dataclasses.replace(FAST, method="ga")
    )
    assert forget_change > 0.1
    assert retain_change > 0  # collateral damage: what GradDiff's retain term is there to fix


def test_graddiff_protects_retain_better_than_ga(tiny_llama, forget_retain):
    twin = copy.deepcopy(tiny_llama)  # same start for both methods
    ga = _nll_change(tiny_llama, *forget_retain, dataclasses.replace(FAST, method="ga"))
    graddiff = _nll_change(twin, *forget_retain, dataclasses.replace(FAST, method="graddiff"))
    assert graddiff[0] > 0.1  # still forgets
    assert graddiff[1] < ga[1] - 0.05  # same lr and steps, same start: retain NLL rises less (here: falls)


def test_npo_loss_starts_at_two_over_beta_log_two_then_falls(tiny_llama, forget_retain):
    forget, _ = forget_retain
    start = copy.deepcopy(tiny_llama)
    config = dataclasses.replace(FAST, method="npo", retain_coef=0.0)
    result = unlearn_with_gradients(tiny_llama, forget, [], config)
    # model == reference at step 0: log ratio 0, loss -(2/beta) log sigmoid(0) = (2/beta) log 2
    assert result.history[0]["loss"] == pytest.approx(2 / 0.1 * math.log(2), rel=1e-6)
    assert result.history[0]["log_ratio"] == pytest.approx(0.0, abs=1e-4)
    # a reference that followed the model would keep the loss at (2/beta) log 2 at every step
    assert result.history[-1]["loss"] < result.history[0]["loss"] - 0.1
    assert result.history[-1]["log_ratio"] < 0
    with torch.no_grad():
        frozen = sequence_logprobs(start, forget[0])
        assert not torch.allclose(sequence_logprobs(tiny_llama, forget[0]), frozen)
        torch.testing.assert_close(reference_logprobs(start, forget)[0], frozen)


def test_flops_estimate_and_token_counts(tiny_llama, tokenizer, texts):
    forget = make_batches(encode_texts(tokenizer, texts[:3], 32), 2, tokenizer.pad_token_id)  # 2 batches
    retain = make_batches(encode_texts(tokenizer, texts[3:6], 32), 2, tokenizer.pad_token_id)  # 2 batches
    config = BaselineConfig(method="npo", lr=1e-4, epochs=1)
    n_params = sum(p.numel() for p in tiny_llama.parameters())
    forget_tokens = sum(b.n_tokens for b in forget)
    result = unlearn_with_gradients(tiny_llama, forget, retain, config)
    # 2 steps: every forget batch once, retain batches cycled in order
    assert result.steps == 2
    assert result.tokens == forget_tokens + retain[0].n_tokens + retain[1].n_tokens
    assert result.reference_tokens == forget_tokens
    assert result.flops_estimate == 6 * n_params * result.tokens + 2 * n_params * forget_tokens
    assert all("retain_nll" in h for h in result.history)


def test_run_is_deterministic_and_leaves_model_in_eval(tiny_llama, forget_retain):
    tiny_llama.requires_grad_(False)
    runs = []
    for model in (copy.deepcopy(tiny_llama), tiny_llama):
        runs.append(
            unlearn_with_gradients(model, *forget_retain, dataclasses.replace(FAST, method="graddiff"))
        )
        assert not model.training
        assert not any(p.requires_grad for p in model.parameters())  # flags restored
    assert runs[0].history == runs[1].history
    assert runs[0].method == "graddiff" and runs[0].elapsed_s > 0
