"""RMU on a tiny random 4-layer Llama with the real tokenizer: what it trains, what it moves, its cost."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch

from codeunlearn.baselines.registry import unlearn_with_gradients
from codeunlearn.baselines.rmu import rmu_parameters
from codeunlearn.core.config import BaselineConfig
from codeunlearn.core.errors import ConfigError
from codeunlearn.model.surgery import decoder_layers, residual_after

from ..conftest import make_tiny

# Layer 3 of 4: RMU trains the MLPs of layers 1-3 and must leave layer 0 and everything else alone.
FAST = BaselineConfig(method="rmu", rmu_layer=3, rmu_lr=3e-3, rmu_alpha=10.0, epochs=20)


@pytest.fixture
def model(tokenizer):
    return make_tiny("llama", len(tokenizer), n_layers=4)


@torch.no_grad()
def _hidden(model, batch, layer=3):
    return residual_after(model, layer, batch.input_ids, batch.attention_mask)[batch.attention_mask.bool()]


def test_residual_after_equals_the_full_forwards_hidden_state(model, forget_retain):
    batch = forget_retain[0][0]
    with torch.no_grad():
        full = model(batch.input_ids, attention_mask=batch.attention_mask, output_hidden_states=True)
    # hidden_states[i + 1] is layer i's output, except the last, which has the final norm applied
    torch.testing.assert_close(
        residual_after(model, 2, batch.input_ids, batch.attention_mask), full.hidden_states[3]
    )


def test_rmu_trains_only_the_mlps_of_its_layer_and_the_two_below(model, forget_retain):
    start = copy.deepcopy(model)
    unlearn_with_gradients(model, *forget_retain, FAST)
    trained = {id(p) for p in rmu_parameters(model, 3)}
    changed = {
        name
        for (name, p), q in zip(model.named_parameters(), start.parameters(), strict=True)
        if not torch.equal(p, q)
    }
    expected = {name for name, p in model.named_parameters() if id(p) in trained}
    assert expected == {n for n, _ in model.named_parameters() if ".mlp." in n and ".layers.0." not in n}
    assert changed == expected


def test_rmu_moves_forget_activations_to_the_control_and_holds_retain(model, forget_retain):
    forget, retain = forget_retain
    start = copy.deepcopy(model)
    result = unlearn_with_gradients(model, forget, retain, FAST)
    first, last = result.history[0], result.history[-1]
    assert last["forget_mse"] < 0.5 * first["forget_mse"]
    assert first["retain_mse"] == pytest.approx(0.0, abs=1e-10)  # the targets are the starting model's
    forget_shift = (_hidden(model, forget[0]) - _hidden(start, forget[0])).norm(dim=-1).mean()
    retain_shift = (_hidden(model, retain[0]) - _hidden(start, retain[0])).norm(dim=-1).mean()
    assert retain_shift < 0.5 * forget_shift
    assert not model.training
    assert [p.requires_grad for p in model.parameters()] == [p.requires_grad for p in start.parameters()]


def test_rmu_is_deterministic_and_counts_its_cost(model, forget_retain):
    forget, retain = forget_retain
    config = dataclasses.replace(FAST, epochs=2)
    runs = [unlearn_with_gradients(m, forget, retain, config) for m in (copy.deepcopy(model), model)]
    assert runs[0].history == runs[1].history
    result = runs[1]
    assert result.method == "rmu" and result.steps == 2
    assert result.tokens == 2 * (forget[0].n_tokens + retain[0].n_tokens)
    layers = decoder_layers(model)
    below = sum(p.numel() for block in layers for p in block.parameters())  # layers 0..3 = all four
    n_trained = sum(p.numel() for p in rmu_parameters(model, 3))
    assert (
        result.flops_estimate == (2 * below + 4 * n_trained) * result.tokens + 2 * below * retain[0].n_tokens
    )


def test_rmu_layer_outside_the_model_is_refused_before_any_step(model, forget_retain):
    start = copy.deepcopy(model)
    with pytest.raises(ConfigError, match=r"baseline.rmu_layer=4, but the model has 4 decoder layers"):
        unlearn_with_gradients(model, *forget_retain, dataclasses.replace(FAST, rmu_layer=4))
    with pytest.raises(ConfigError, match="RMU needs forget and retain batches"):
        unlearn_with_gradients(model, forget_retain[0], [], FAST)
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), start.parameters(), strict=True))
