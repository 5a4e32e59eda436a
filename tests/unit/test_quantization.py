"""Fake weight quantization: hand values, and that it rounds the model's linear layers only."""

from __future__ import annotations

import torch

from codeunlearn.evaluation.quantization import fake_quantize_, quantize_weight, weights_quantized


def test_quantize_weight_hand_values():
    weight = torch.tensor([[1.0, -0.45, 0.26, 0.0], [0.1, 0.2, 0.3, 0.7]])
    # 4 bits: 7 positive levels per row; row 0 scale 1/7, row 1 scale 0.1.
    expected = torch.tensor([[1.0, -3 / 7, 2 / 7, 0.0], [0.1, 0.2, 0.3, 0.7]])
    torch.testing.assert_close(quantize_weight(weight, bits=4, group_size=0), expected)
    # Groups of 2: each pair has its own scale, so small weights next to small weights keep precision.
    grouped = quantize_weight(torch.tensor([[1.0, 0.45, 0.03, 0.01]]), bits=4, group_size=2)
    torch.testing.assert_close(grouped, torch.tensor([[1.0, 3 / 7, 0.03, 0.01]]), atol=2e-3, rtol=0)
    assert quantize_weight(weight, bits=8, group_size=0).sub(weight).abs().max() <= 1 / 127 / 2 + 1e-7


def test_fake_quantize_rounds_linear_layers_and_keeps_embeddings(tiny_llama):
    embedding = tiny_llama.get_input_embeddings().weight.clone()
    projection = tiny_llama.model.layers[0].self_attn.q_proj.weight.clone()

    quantized = fake_quantize_(tiny_llama, bits=4, group_size=16)

    assert quantized == 7 * len(tiny_llama.model.layers) + (0 if tiny_llama.config.tie_word_embeddings else 1)
    torch.testing.assert_close(tiny_llama.get_input_embeddings().weight, embedding)
    after = tiny_llama.model.layers[0].self_attn.q_proj.weight
    assert not torch.equal(after, projection)
    groups = after.reshape(after.shape[0], -1, 16)
    assert (
        groups.unique(dim=-1).shape[-1] <= 16
        and all(  # at most 16 distinct values per group
            len(g.unique()) <= 16 for g in groups.reshape(-1, 16)[:50]
        )
    )


def test_weights_quantized_restores_the_exact_weights(tiny_llama):
    before = {name: p.clone() for name, p in tiny_llama.named_parameters()}
    ids = torch.tensor([[1, 5, 9, 3]])
    logits = tiny_llama(input_ids=ids).logits

    with weights_quantized(tiny_llama, bits=2, group_size=16):
        assert not torch.allclose(tiny_llama(input_ids=ids).logits, logits)

    for name, parameter in tiny_llama.named_parameters():
        assert torch.equal(parameter, before[name]), name
