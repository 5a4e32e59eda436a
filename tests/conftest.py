"""Shared fixtures: the real SmolLM2 tokenizer and tiny random-weight Llama / GPT-2 models."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


@pytest.fixture(scope="session")
def tokenizer():
    from transformers import AutoTokenizer

    from codeunlearn.model.assets import ensure_smollm2

    tok = AutoTokenizer.from_pretrained(ensure_smollm2())
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


def make_tiny(kind: str, vocab_size: int, n_layers: int = 2, width: int = 32) -> torch.nn.Module:
    """A tiny random-weight model of a real architecture, in eval mode."""
    from transformers import AutoConfig, AutoModelForCausalLM, GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    if kind in ("llama", "qwen2", "mistral"):  # one Llama-family shape, built by model_type
        config = AutoConfig.for_model(
            kind,
            vocab_size=vocab_size,
            hidden_size=width,
            intermediate_size=2 * width,
            num_hidden_layers=n_layers,
            num_attention_heads=4,
            num_key_value_heads=2,
            bos_token_id=1,
            eos_token_id=2,
            pad_token_id=2,
        )
        return AutoModelForCausalLM.from_config(config).eval()
    config = GPT2Config(
        vocab_size=vocab_size, n_embd=width, n_layer=n_layers, n_head=4, bos_token_id=1, eos_token_id=2
    )
    return GPT2LMHeadModel(config).eval()


@pytest.fixture(params=["llama", "gpt2"])
def tiny_model(request, tokenizer):
    return make_tiny(request.param, len(tokenizer))


@pytest.fixture
def tiny_llama(tokenizer):
    return make_tiny("llama", len(tokenizer))


TEXTS = [
    "bread: food made from dough of flour or meal",
    "cheese: a solid food prepared from the pressed curd of milk",
    "soup: liquid food especially of meat or fish or vegetable stock",
    "oak: a deciduous tree of the genus Quercus",
    "cat: feline mammal usually having thick soft fur",
    "hammer: a hand tool with a heavy rigid head",
    "river: a large natural stream of water",
    "violin: bowed stringed instrument that is the highest member of the family",
]


@pytest.fixture
def texts():
    return list(TEXTS)


@pytest.fixture
def forget_retain(tokenizer, texts):
    """Food glosses to forget (one batch of 3), everything else to retain (one batch of 5)."""
    from codeunlearn.data.batching import encode_texts, make_batches

    forget = make_batches(encode_texts(tokenizer, texts[:3], 32), 3, tokenizer.pad_token_id)
    retain = make_batches(encode_texts(tokenizer, texts[3:], 32), 5, tokenizer.pad_token_id)
    return forget, retain
