"""Model surgery: partial forwards match the full model; save/load round-trips logits and mask."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from codeunlearn.core.config import BottleneckConfig
from codeunlearn.core.errors import ConfigError
from codeunlearn.model.surgery import (
    bypassed,
    forward_from_site,
    forward_to_site,
    insert_bottleneck,
    load_codebook_model,
    recording,
    save_codebook_model,
)
from codeunlearn.unlearning.masks import apply_mask, mask_from_codes

from ..conftest import make_tiny


def inputs(vocab: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(3, vocab, (3, 9), generator=generator)
    ids[:, 0] = 1
    mask = torch.ones_like(ids)
    mask[2, 6:] = 0
    return ids, mask


def test_lower_then_upper_equals_full_forward(tiny_model, tokenizer):
    codebook_model = insert_bottleneck(
        tiny_model, tokenizer, BottleneckConfig(layer=0, n_codes=32, top_k=4), "t"
    )
    ids, mask = inputs(len(tokenizer))
    with torch.no_grad():
        full = tiny_model(input_ids=ids, attention_mask=mask).logits
        hidden, out = forward_to_site(codebook_model, ids, mask)
        split = forward_from_site(codebook_model, out.hidden, mask)
        with bypassed(codebook_model):
            base = tiny_model(input_ids=ids, attention_mask=mask).logits
            base_split = forward_from_site(codebook_model, hidden, mask)
    real = mask.bool()
    torch.testing.assert_close(split[real], full[real], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(base_split[real], base[real], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(full, base)  # the bottleneck really changes the model


def test_save_load_round_trips_logits_exactly_with_mask(tiny_model, tokenizer, tmp_path):
    codebook_model = insert_bottleneck(
        tiny_model, tokenizer, BottleneckConfig(layer=1, n_codes=32, top_k=4), "t"
    )
    apply_mask(codebook_model, mask_from_codes(32, "topic", [0, 5, 7]))
    ids, mask = inputs(len(tokenizer))
    with torch.no_grad():
        before = tiny_model(input_ids=ids, attention_mask=mask).logits
    save_codebook_model(codebook_model, tmp_path / "model")
    loaded = load_codebook_model(tmp_path / "model")
    assert loaded.bottleneck.mask.nonzero().flatten().tolist() == [0, 5, 7]
    with torch.no_grad():
        after = loaded.model(input_ids=ids, attention_mask=mask).logits
    assert torch.equal(before, after)
    assert not (tmp_path / "model.partial").exists()


def test_layer_out_of_range_names_the_valid_range(tiny_llama, tokenizer):
    with pytest.raises(
        ConfigError, match="bottleneck.layer=34, but the model has 2 decoder layers: set it between 0 and 1"
    ):
        insert_bottleneck(tiny_llama, tokenizer, BottleneckConfig(layer=34), "t")


@pytest.mark.parametrize("kind", ["qwen2", "mistral"])
def test_other_llama_family_models(kind, tokenizer, tmp_path):
    model = make_tiny(kind, len(tokenizer))
    codebook_model = insert_bottleneck(model, tokenizer, BottleneckConfig(layer=0, n_codes=32, top_k=4), kind)
    ids, mask = inputs(len(tokenizer))
    with torch.no_grad():
        full = model(input_ids=ids, attention_mask=mask).logits
        _, out = forward_to_site(codebook_model, ids, mask)
        split = forward_from_site(codebook_model, out.hidden, mask)
    torch.testing.assert_close(split[mask.bool()], full[mask.bool()], atol=1e-5, rtol=1e-5)
    save_codebook_model(codebook_model, tmp_path / kind)
    with torch.no_grad():
        again = load_codebook_model(tmp_path / kind).model(input_ids=ids, attention_mask=mask).logits
    assert torch.equal(full, again)


@pytest.mark.parametrize("kind", ["llama", "gpt2"])
def test_cached_generation_applies_the_bottleneck_to_every_new_token(kind, tokenizer):
    """Each KV-cached decoding step is one token past position 0: it must go through the codebook
    (and its mask) exactly as in a full forward over the whole sequence."""
    codebook_model = insert_bottleneck(
        make_tiny(kind, len(tokenizer)), tokenizer, BottleneckConfig(layer=0, n_codes=32, top_k=2), "t"
    )
    apply_mask(codebook_model, mask_from_codes(32, "m", list(range(0, 32, 2))))
    prompt = torch.tensor([[1, 40, 41, 42]])
    with torch.no_grad():
        cached = codebook_model.model.generate(prompt, max_new_tokens=6, do_sample=False, pad_token_id=2)
        uncached = codebook_model.model.generate(
            prompt, max_new_tokens=6, do_sample=False, pad_token_id=2, use_cache=False
        )
        full = codebook_model.model(input_ids=cached).logits
    assert torch.equal(cached, uncached)
    # Greedy decoding picked the argmax of the full (bottlenecked) forward at every new position.
    assert torch.equal(full[0, 3:-1].argmax(-1), cached[0, 4:])


def test_cached_generation_carries_the_context_gate_from_step_to_step(tokenizer):
    """Under the context gate a token's dropped codes depend on the earlier tokens of its text: each
    decoding step must see the gated tokens of the prompt and of the steps before it."""
    config = BottleneckConfig(
        layer=0, n_codes=32, top_k=4, mask_policy="zero", mask_gate=3, mask_context_gate=1
    )
    codebook_model = insert_bottleneck(make_tiny("llama", len(tokenizer)), tokenizer, config, "t")
    apply_mask(codebook_model, mask_from_codes(32, "m", list(range(0, 32, 2))))
    prompt = torch.tensor([[1, 40, 41, 42]])
    with torch.no_grad(), recording(codebook_model) as steps:
        generated = codebook_model.model.generate(prompt, max_new_tokens=8, do_sample=False, pad_token_id=2)
    with torch.no_grad(), recording(codebook_model) as whole:
        codebook_model.model(input_ids=generated[:, :-1])
    cached = torch.cat([step.codes for step in steps], dim=1)
    assert cached.shape == whole[0].codes.shape
    assert torch.equal(cached, whole[0].codes)
    bottleneck = codebook_model.bottleneck
    bottleneck.serve(replace(bottleneck.policy, mask_context_gate=0))  # the same model, no context gate
    with torch.no_grad(), recording(codebook_model) as plain:
        codebook_model.model(input_ids=generated[:, :-1])
    assert not torch.equal(plain[0].codes[:, 4:], cached[:, 4:])  # the carried count changed decoding


def test_a_policy_served_on_one_loaded_model_does_not_reach_another(tokenizer, tmp_path):
    config = BottleneckConfig(layer=1, n_codes=32, top_k=4)
    codebook_model = insert_bottleneck(make_tiny("llama", len(tokenizer)), tokenizer, config, "t")
    save_codebook_model(codebook_model, tmp_path / "model")
    one, other = load_codebook_model(tmp_path / "model"), load_codebook_model(tmp_path / "model")
    ids, mask = inputs(len(tokenizer))
    with torch.no_grad():
        before = other.model(input_ids=ids, attention_mask=mask).logits
    gated = replace(one.bottleneck.policy, mask_policy="zero", mask_gate=2, mask_context_gate=1)
    one.bottleneck.serve(gated)
    apply_mask(one, mask_from_codes(32, "topic", list(range(0, 32, 2))))
    with torch.no_grad():
        assert not torch.equal(one.model(input_ids=ids, attention_mask=mask).logits, before)
        assert torch.equal(other.model(input_ids=ids, attention_mask=mask).logits, before)
    assert other.bottleneck.policy.mask_policy == "next_best"
    # Saved, a served model keeps serving as it did: its config carries the policy in force.
    save_codebook_model(one, tmp_path / "served")
    assert load_codebook_model(tmp_path / "served").bottleneck.policy == gated
