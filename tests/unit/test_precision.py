"""train.precision: bf16 autocast where the device multiplies bf16 natively, fp32 elsewhere or on request."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from codeunlearn.core.config import ConfigError, TrainConfig
from codeunlearn.core.config_io import load_config
from codeunlearn.model.precision import training_precision, trains_in_bf16
from codeunlearn.training.stamp import same_training, training_stamp
from codeunlearn.training.trainer import site_activations, train

from .test_training import setup_model


def test_the_setting_decides_and_auto_follows_the_device():
    native = torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    assert trains_in_bf16("cpu", "auto") == native
    assert trains_in_bf16("cpu", "bf16") and not trains_in_bf16("cpu", "fp32")
    assert trains_in_bf16("cuda", "auto") and not trains_in_bf16("cuda", "fp32")


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_matrix_products_run_in_bf16_only_inside_a_bf16_context(precision):
    a, b = torch.randn(4, 8), torch.randn(8, 3)
    with training_precision("cpu", precision):
        inside = (a @ b).dtype
    assert inside == (torch.bfloat16 if precision == "bf16" else torch.float32)
    assert (a @ b).dtype == torch.float32  # nothing leaks out of the context


def test_an_unknown_precision_is_refused_with_the_choices():
    with pytest.raises(ConfigError, match="train.precision='fp16'.*'auto', 'fp32' or 'bf16'"):
        TrainConfig(precision="fp16").validate()


def test_both_precisions_learn_and_fp32_repeats_exactly(tokenizer, texts):
    config = TrainConfig(mode="above", epochs=3, lr=1e-2, base_lr=1e-2, reseed_every=0, kmeans_iters=2)
    codes = {}
    for precision in ("fp32", "bf16", "fp32"):
        codebook_model, batches = setup_model(tokenizer, texts)
        result = train(codebook_model, batches, replace(config, precision=precision))
        first = sum(h["nll"] for h in result.history[:3]) / 3
        assert result.final_loss < first, precision
        codes.setdefault(precision, []).append(codebook_model.bottleneck.codes.detach().clone())
    assert torch.equal(*codes["fp32"])  # same seed, same precision: the same codebook
    assert not torch.equal(codes["fp32"][0], codes["bf16"][0])  # the setting reaches the training step


def test_activations_cached_for_training_keep_fp32_storage_in_either_precision(tokenizer, texts):
    codebook_model, batches = setup_model(tokenizer, texts)
    fp32 = site_activations(codebook_model, batches[:2], "fp32")
    bf16 = site_activations(codebook_model, batches[:2], "bf16")
    assert all(h.dtype == torch.float32 for h in fp32 + bf16)
    torch.testing.assert_close(bf16[0], fp32[0], rtol=0.1, atol=0.1)  # bf16 rounding, not another model
    assert not torch.equal(bf16[0], fp32[0])


def test_models_saved_before_the_setting_existed_are_reused_and_an_explicit_one_is_another_model():
    config = load_config(None, [])
    current = training_stamp(config)
    older = {**current, "train": {k: v for k, v in current["train"].items() if k != "precision"}}
    assert same_training(older, current)
    forced = training_stamp(replace(config, train=replace(config.train, precision="fp32")))
    assert not same_training(older, forced)
