"""Training: every mode learns, frozen weights stay frozen, and resuming a checkpoint changes nothing."""

from __future__ import annotations

import pytest
import torch

from codeunlearn.batching import encode_texts, make_batches
from codeunlearn.config import BottleneckConfig, TrainConfig
from codeunlearn.surgery import decoder_layers, insert_bottleneck
from codeunlearn.training import train

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
