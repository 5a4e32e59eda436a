"""A masked version is served under the mask policy and gates it was evaluated with, not the settings
its codebook version was saved with."""

from __future__ import annotations

from dataclasses import replace

import mlflow
from mlflow import MlflowClient

from codeunlearn import tracked
from codeunlearn.masks import apply_mask, load_mask
from codeunlearn.pipeline import load_model
from codeunlearn.tracking import Tracker

from .conftest import Setup


def test_a_masked_version_serves_under_the_configured_policy_and_gate(trained: Setup):
    # The codebook version was trained and saved under next_best; the mask is made and judged under a
    # gated zero policy, which does not retrain.
    config = trained.config
    gated = replace(config.bottleneck, mask_policy="zero", mask_gate=2, mask_context_gate=1)
    config = replace(config, bottleneck=gated, mining=replace(config.mining, n_select=24))
    outcome = tracked.run_pipeline(config)

    tracker = Tracker(config)
    assert outcome["codebook_version"] == "1"
    version = MlflowClient(tracker.uri).get_model_version(tracker.masked_name, outcome["mask_version"])
    assert (version.tags["mask_policy"], version.tags["mask_gate"]) == ("zero", "2")
    assert (version.tags["mask_context_gate"], version.tags["mask_context_after"]) == ("1", "1")
    mlflow.set_tracking_uri(tracker.uri)
    served = mlflow.pyfunc.load_model(f"models:/{tracker.masked_name}/{version.version}")
    served = served.unwrap_python_model()
    bottleneck = served.codebook_model.bottleneck
    assert (bottleneck.config.mask_policy, bottleneck.config.mask_gate) == ("zero", 2)
    assert (bottleneck.config.mask_context_gate, bottleneck.config.mask_context_after) == (1, 1)

    # The served model chooses exactly the codes the evaluated one does, gate included.
    local = load_model(config)
    mask = load_mask(trained.run_dir / "masks" / "active.json")
    apply_mask(local, mask)
    h = local.bottleneck.encode(local.bottleneck.codes.detach()[:40] + 0.1)
    codes = served.codebook_model.bottleneck.code_ids(h)
    assert codes.eq(local.bottleneck.code_ids(h)).all()
    sequences = h.view(2, 20, -1)  # the context gate counts gated tokens along each sequence
    assert bottleneck(sequences).codes.eq(local.bottleneck(sequences).codes).all()
    ungated = local.bottleneck.code_ids(h)
    local.bottleneck.set_mask_policy("zero", 1)
    assert not ungated.eq(local.bottleneck.code_ids(h)).all()  # the gate changes which slots are emptied
