"""Training: every mode learns, frozen weights stay frozen, and resuming a checkpoint changes nothing."""

from __future__ import annotations

import pytest
import torch

from codeunlearn.core.config import BottleneckConfig, TrainConfig
from codeunlearn.data.batching import encode_texts, make_batches
from codeunlearn.model.surgery import decoder_layers, insert_bottleneck
from codeunlearn.training.trainer import train

from ..conftest import make_tiny


def setup_model(tokenizer, texts, kind="llama"):
    model = make_tiny(kind, len(tokenizer), n_layers=3)
    codebook_model = insert_bottleneck(model, tokenizer, BottleneckConfig(layer=1, n_codes=32, top_k=4), "t")
    batches = make_batches(encode_texts(tokenizer, texts * 3, 32), 4, tokenizer.pad_token_id)
    return codebook_model, batches


@pytest.mark.parametrize("mode", ["frozen", "above", "joint"])
def test_modes_learn_and_touch_only_their_weights(tokenizer, texts, mode):
    codebook_model, batches = setup_model(tokenizer, texts)
    layers = decoder_layers(codebook_model.model)
    below = layers[0].mlp.down_proj.weight.clone()
    above = layers[2].mlp.down_proj.weight.clone()
    result = train(
        codebook_model,
        batches,
        TrainConfig(mode=mode, epochs=4, lr=1e-2, base_lr=1e-2, reseed_every=3, kmeans_iters=2),
    )
    first = sum(h["nll"] for h in result.history[:3]) / 3
    assert result.final_loss < first
    assert torch.equal(layers[0].mlp.down_proj.weight, below) == (mode != "joint")
    assert torch.equal(layers[2].mlp.down_proj.weight, above) == (mode == "frozen")
    assert not any(p.requires_grad for p in codebook_model.model.parameters())


def test_resume_from_checkpoint_matches_uninterrupted_run(tokenizer, texts, tmp_path):
    config = TrainConfig(mode="above", epochs=2, lr=1e-2, checkpoint_every=4, reseed_every=0, kmeans_iters=2)
    whole, batches = setup_model(tokenizer, texts)
    train(whole, batches, config)

    interrupted, batches = setup_model(tokenizer, texts)
    train(
        interrupted,
        batches,
        TrainConfig(**{**config.__dict__, "epochs": 4 / len(batches)}),
        checkpoint_dir=tmp_path,
    )  # stops after the 4th step, right at a checkpoint
    resumed, batches = setup_model(tokenizer, texts)
    train(resumed, batches, config, checkpoint_dir=tmp_path)
    torch.testing.assert_close(resumed.bottleneck.codes, whole.bottleneck.codes)
    layer = lambda m: decoder_layers(m.model)[2].mlp.down_proj.weight  # noqa: E731
    torch.testing.assert_close(layer(resumed), layer(whole))


def test_history_has_every_step_and_usage_counts_content_codes_only(tokenizer, texts):
    from codeunlearn.model.bottleneck import NO_CODE
    from codeunlearn.training.trainer import _StepOutput, _TrainState

    state = _TrainState(6)
    codes = torch.tensor([[[0, 1], [2, NO_CODE]], [[1, 1], [5, 0]]])  # (B=2, T=2, k=2)
    for step in range(3):
        state.step = step
        state.record(_StepOutput(torch.zeros(()), torch.tensor(float(step)), torch.tensor(0.5), codes))
    assert state.usage.tolist() == [6, 9, 3, 0, 0, 3]
    assert state.history == []  # nothing read on the host before a flush
    assert state.flush() == {"step": 2, "nll": 2.0, "recon": 0.5}
    assert [h["step"] for h in state.history] == [0, 1, 2]

    codebook_model, batches = setup_model(tokenizer, texts)
    steps = 2 * len(batches)  # not a multiple of the flush interval
    config = TrainConfig(mode="above", epochs=2, reseed_every=0, kmeans_iters=1)
    result = train(codebook_model, batches, config)
    assert result.steps == steps and [h["step"] for h in result.history] == list(range(steps))


def test_compiled_layers_train_like_eager_ones_and_are_eager_again_after(tokenizer, texts):
    config = TrainConfig(mode="above", epochs=1, lr=1e-2, reseed_every=0, kmeans_iters=1)
    eager, batches = setup_model(tokenizer, texts)
    eager_result = train(eager, batches, config)
    compiled, batches = setup_model(tokenizer, texts)
    compiled_result = train(compiled, batches, TrainConfig(**{**config.__dict__, "compile": True}))
    assert all("forward" not in vars(layer) for layer in decoder_layers(compiled.model))
    eager_nll = [h["nll"] for h in eager_result.history]
    torch.testing.assert_close([h["nll"] for h in compiled_result.history], eager_nll, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(compiled.bottleneck.codes, eager.bottleneck.codes, rtol=1e-3, atol=1e-4)


def test_too_few_activations_for_the_codes_are_warned_about_with_the_fix(tokenizer, texts, caplog):
    codebook_model, batches = setup_model(tokenizer, texts)  # 32 codes, 24 texts of ~12 tokens
    with caplog.at_level("WARNING", logger="codeunlearn.training.trainer"):
        train(codebook_model, batches, TrainConfig(epochs=1, init_vectors=40, kmeans_iters=1))
    assert "initialising 32 codes from only 40 activations: set train.init_vectors=96" in caplog.text
    caplog.clear()
    codebook_model, batches = setup_model(tokenizer, texts)
    with caplog.at_level("WARNING", logger="codeunlearn.training.trainer"):
        train(codebook_model, batches, TrainConfig(epochs=1, init_vectors=64, kmeans_iters=1))
    assert "initialising" not in caplog.text
