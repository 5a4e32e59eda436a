"""The no-bottleneck reference on the tiny setup: trained once, cached by what it depends on."""

from __future__ import annotations

import json
from dataclasses import replace

from codeunlearn import pipeline
from codeunlearn.reference import CACHE_FILE

from .conftest import Setup


def test_the_reference_is_reused_until_its_training_or_data_change(make_setup):
    setup: Setup = make_setup(eval={"run_reference": True, "sweep": []})
    config = setup.config
    pipeline.prepare(config)
    pipeline.train_codebook(config)
    pipeline.mine(config)
    pipeline.unlearn(config)

    first = pipeline.evaluate(config)
    cache = setup.run_dir / "eval" / CACHE_FILE
    stored = json.loads(cache.read_text())
    assert stored["nll"] == first.nll["reference"]
    assert first.nll["reference"]["retain"] < first.nll["base"]["retain"]  # fine-tuning helped

    # A marker in the cache shows whether the next evaluation read it or trained the reference again.
    cache.write_text(json.dumps({"key": stored["key"], "nll": {k: 1.0 for k in stored["nll"]}}))
    other_mask_policy = replace(config, bottleneck=replace(config.bottleneck, mask_policy="zero"))
    assert pipeline.evaluate(other_mask_policy).nll["reference"]["forget"] == 1.0

    other_lr = replace(config, train=replace(config.train, base_lr=config.train.base_lr / 2))
    retrained = pipeline.evaluate(other_lr).nll["reference"]
    assert retrained["forget"] != 1.0
    assert json.loads(cache.read_text())["key"] != stored["key"]
