"""The real offline default model: conversion, surgery and save/load on SmolLM2-135M-Instruct."""

from __future__ import annotations

import pytest
import torch

from codeunlearn.core.config import BottleneckConfig
from codeunlearn.data.batching import encode_texts, make_batches
from codeunlearn.model.assets import SMOLLM2_ALIAS, load_pretrained
from codeunlearn.model.surgery import (
    forward_from_site,
    forward_to_site,
    insert_bottleneck,
    load_codebook_model,
    save_codebook_model,
)
from codeunlearn.unlearning.masks import apply_mask, mask_from_codes

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smollm2():
    return load_pretrained(SMOLLM2_ALIAS)


def test_default_model_is_smollm2_135m(smollm2):
    model, tokenizer = smollm2
    assert model.config.model_type == "llama" and model.config.num_hidden_layers == 30
    assert model.config.hidden_size == 576
    assert abs(sum(p.numel() for p in model.parameters()) / 1e6 - 134.5) < 0.2
    ids = tokenizer("The capital of France is", return_tensors="pt").input_ids
    with torch.no_grad():
        next_token = model(ids).logits[0, -1].argmax()
    assert "Paris" in tokenizer.decode(next_token)  # real weights, not random ones


def test_surgery_and_round_trip_on_the_real_model(smollm2, tmp_path, texts):
    model, tokenizer = smollm2
    codebook_model = insert_bottleneck(
        model, tokenizer, BottleneckConfig(layer=20, n_codes=512), SMOLLM2_ALIAS
    )
    apply_mask(codebook_model, mask_from_codes(512, "t", [1, 2, 3]))
    batch = make_batches(encode_texts(tokenizer, texts, 32), 8, tokenizer.pad_token_id)[0]
    with torch.no_grad():
        full = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
        _, out = forward_to_site(codebook_model, batch.input_ids, batch.attention_mask)
        split = forward_from_site(codebook_model, out.hidden, batch.attention_mask)
    real = batch.attention_mask.bool()
    torch.testing.assert_close(split[real], full[real], atol=1e-4, rtol=1e-4)
    save_codebook_model(codebook_model, tmp_path / "cb")
    loaded = load_codebook_model(tmp_path / "cb")
    with torch.no_grad():
        again = loaded.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    assert torch.equal(full, again)
