"""T5 site: the bottleneck replaces an encoder block's self-attention output; train, save, load, mask."""

from __future__ import annotations

import pytest
import torch

from codeunlearn.core.config import BottleneckConfig, TrainConfig, TranslationConfig
from codeunlearn.core.errors import CodeunlearnError
from codeunlearn.model.surgery import (
    bypassed,
    forward_from_site,
    forward_to_site,
    insert_bottleneck,
    load_codebook_model,
    modules_above,
    recording,
    save_codebook_model,
)
from codeunlearn.translation.seq2seq import source_batches, train_translation, translate, translation_batches
from codeunlearn.unlearning.masks import apply_mask, mask_from_codes
from codeunlearn.unlearning.mining import count_codes

SOURCES = ["the love of God", "a river of water", "bread and wine", "the king spoke", "love one another"]
TARGETS = ["el amor de Dios", "un río de agua", "pan y vino", "el rey habló", "amaos unos a otros"]
CONFIG = BottleneckConfig(layer=1, n_codes=32, top_k=4, skip_first_token=False)


def make_t5(vocab_size: int, pad_id: int, eos_id: int) -> torch.nn.Module:
    from transformers import T5Config, T5ForConditionalGeneration

    torch.manual_seed(0)
    config = T5Config(
        vocab_size=vocab_size,
        d_model=32,
        d_kv=8,
        d_ff=64,
        num_layers=2,
        num_decoder_layers=2,
        num_heads=4,
        pad_token_id=pad_id,
        eos_token_id=eos_id,
        decoder_start_token_id=pad_id,
        dropout_rate=0.0,
    )
    return T5ForConditionalGeneration(config).eval()


@pytest.fixture
def t5(tokenizer):
    return make_t5(len(tokenizer), tokenizer.pad_token_id, tokenizer.eos_token_id)


def inputs(vocab: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(3, vocab, (3, 9), generator=generator)
    mask = torch.ones_like(ids)
    mask[2, 6:] = 0
    labels = torch.randint(3, vocab, (3, 5), generator=generator)
    return ids, mask, labels


def test_bottleneck_sits_after_the_self_attention_residual_add(t5, tokenizer):
    codebook_model = insert_bottleneck(t5, tokenizer, CONFIG, "t5")
    ids, mask, labels = inputs(len(tokenizer))
    seen: list[torch.Tensor] = []
    feed_forward = t5.encoder.block[1].layer[1]  # the sublayer right after the site
    handle = feed_forward.register_forward_pre_hook(lambda _m, args: seen.append(args[0]))
    with torch.no_grad(), recording(codebook_model) as outputs:
        with_codebook = t5(input_ids=ids, attention_mask=mask, labels=labels).logits
    handle.remove()
    assert len(outputs) == 1 and outputs[0].codes.shape == (3, 9, 4)
    assert torch.equal(seen[0], outputs[0].hidden)  # the feed-forward reads the bottleneck's output
    with torch.no_grad(), bypassed(codebook_model):
        base = t5(input_ids=ids, attention_mask=mask, labels=labels).logits
        raw, _ = forward_to_site(codebook_model, ids, mask)
    assert not torch.allclose(with_codebook, base)
    assert torch.equal(codebook_model.bottleneck(raw).codes, outputs[0].codes)
    assert any(m is feed_forward for m in modules_above(t5, 1)) and any(
        m is t5.decoder for m in modules_above(t5, 1)
    )
    with pytest.raises(CodeunlearnError, match="encoder-decoder"):
        forward_from_site(codebook_model, raw, mask)


def test_save_load_gives_identical_logits_and_mask(t5, tokenizer, tmp_path):
    codebook_model = insert_bottleneck(t5, tokenizer, CONFIG, "t5")
    apply_mask(codebook_model, mask_from_codes(32, "topic", [1, 4, 9]))
    ids, mask, labels = inputs(len(tokenizer))
    with torch.no_grad():
        before = t5(input_ids=ids, attention_mask=mask, labels=labels).logits
    save_codebook_model(codebook_model, tmp_path / "t5")
    loaded = load_codebook_model(tmp_path / "t5")
    assert type(loaded.model).__name__ == "T5ForConditionalGeneration"
    assert loaded.bottleneck.mask.nonzero().flatten().tolist() == [1, 4, 9]
    with torch.no_grad():
        after = loaded.model(input_ids=ids, attention_mask=mask, labels=labels).logits
    assert torch.equal(before, after)


def test_mask_changes_outputs_and_masked_codes_never_fire(t5, tokenizer):
    codebook_model = insert_bottleneck(t5, tokenizer, CONFIG, "t5")
    ids, mask, labels = inputs(len(tokenizer))
    with torch.no_grad(), recording(codebook_model) as outputs:
        plain = t5(input_ids=ids, attention_mask=mask, labels=labels).logits
    fired = outputs[0].codes[mask.bool()].unique()[:6].tolist()
    apply_mask(codebook_model, mask_from_codes(32, "topic", fired))
    with torch.no_grad(), recording(codebook_model) as outputs:
        masked = t5(input_ids=ids, attention_mask=mask, labels=labels).logits
    assert not torch.allclose(plain, masked)
    assert not set(outputs[0].codes.flatten().tolist()) & set(fired)
    counts = count_codes(codebook_model, source_batches(tokenizer, SOURCES, TranslationConfig(), True, 2))
    assert counts.token_counts[fired].sum() == 0 and counts.token_counts.sum() > 0


@pytest.mark.parametrize("mode", ["joint", "above"])
def test_training_reduces_the_translation_loss(t5, tokenizer, mode):
    codebook_model = insert_bottleneck(t5, tokenizer, CONFIG, "t5")
    batches = translation_batches(tokenizer, SOURCES, TARGETS, TranslationConfig(), True, batch_size=5)
    encoder_below = t5.encoder.block[0].layer[1].DenseReluDense.wi.weight.clone()

    def loss() -> float:
        with torch.no_grad():
            b = batches[0]
            return t5(input_ids=b.input_ids, attention_mask=b.attention_mask, labels=b.labels).loss.item()

    config = TrainConfig(mode=mode, epochs=30, lr=3e-3, base_lr=3e-3, init_vectors=64, reseed_every=0)
    before = loss()
    result = train_translation(codebook_model, batches, config)
    assert result.steps == 30
    assert loss() < before - 0.5
    if mode == "above":  # the block below the site never changes
        assert torch.equal(encoder_below, t5.encoder.block[0].layer[1].DenseReluDense.wi.weight)
    assert len(translate(t5, tokenizer, SOURCES[:2], TranslationConfig(max_new_tokens=4), 2)) == 2
