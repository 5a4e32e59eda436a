"""The no-bottleneck reference on the tiny setup: trained once, cached by what it depends on."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from codeunlearn.core.paths import open_run
from codeunlearn.data.topics import read_splits
from codeunlearn.evaluation.reference import CACHE_FILE, reference_key
from codeunlearn.evaluation.sets import eval_sets_of
from codeunlearn.model.loading import load_model
from codeunlearn.pipeline import stages as pipeline
from codeunlearn.pipeline.evaluate import evaluate
from codeunlearn.pipeline.training_texts import training_texts

from .conftest import Setup


def test_the_reference_is_reused_until_its_training_or_data_change(make_setup):
    setup: Setup = make_setup(eval={"run_reference": True, "sweep": []})
    config = setup.config
    pipeline.prepare(config)
    pipeline.train_codebook(config)
    pipeline.mine(config)
    pipeline.unlearn(config)

    first = evaluate(config)
    cache = setup.run_dir / "eval" / CACHE_FILE
    ((key, nll),) = json.loads(cache.read_text())["entries"].items()
    assert nll == first.nll["reference"]
    assert first.nll["reference"]["retain"] < first.nll["base"]["retain"]  # fine-tuning helped

    # A marker in the cache shows whether the next evaluation read it or trained the reference again;
    # the one-entry layout of caches written before they could be shared still reads.
    cache.write_text(json.dumps({"key": key, "nll": {k: 1.0 for k in nll}}))
    other_mask_policy = replace(config, bottleneck=replace(config.bottleneck, mask_policy="zero"))
    assert evaluate(other_mask_policy).nll["reference"]["forget"] == 1.0
    # The bottleneck's own training settings do not enter the reference's fine-tune either.
    codebook_only = replace(config.train, lr=config.train.lr / 2, init_vectors=7, reseed_every=3)
    texts = training_texts(config)
    eval_sets = eval_sets_of(
        read_splits(open_run(config).splits_dir),
        load_model(config).tokenizer,
        config.data.max_length,
        config.eval.batch_size,
    )
    assert reference_key(replace(config, train=codebook_only), texts, eval_sets) == key
    assert reference_key(replace(config, train=replace(codebook_only, base_lr=1e-6)), texts, eval_sets) != key

    other_lr = replace(config, train=replace(config.train, base_lr=config.train.base_lr / 2))
    retrained = evaluate(other_lr).nll["reference"]
    assert retrained["forget"] != 1.0
    entries = json.loads(cache.read_text())["entries"]
    assert len(entries) == 2  # the new key joins the old one
    assert entries[key]["forget"] == 1.0

    # A shared cache file elsewhere (as an ablation's variants use) is read and written the same way.
    shared = setup.run_dir / "shared" / "reference.json"
    shared_config = replace(config, eval=replace(config.eval, reference_cache=str(shared)))
    fresh = evaluate(shared_config).nll["reference"]  # not in the new file: trained again
    assert fresh == pytest.approx(first.nll["reference"], rel=1e-5)
    assert key in json.loads(shared.read_text())["entries"]
    shared.write_text(json.dumps({"entries": {key: {k: 2.0 for k in nll}}}))
    assert evaluate(shared_config).nll["reference"]["forget"] == 2.0
