"""A masked version is served under the mask policy, gates and condition it was evaluated with, not
the settings its codebook version was saved with."""

from __future__ import annotations

from dataclasses import replace

import mlflow
import torch
from mlflow import MlflowClient

from codeunlearn.data.topics import read_splits
from codeunlearn.model.bottleneck import NO_CODE
from codeunlearn.model.loading import load_model
from codeunlearn.tracking import stages as tracked
from codeunlearn.tracking.tracker import Tracker
from codeunlearn.unlearning.masks import apply_mask, load_mask
from codeunlearn.unlearning.topic_detector import prompt_features

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
    assert (bottleneck.policy.mask_policy, bottleneck.policy.mask_gate) == ("zero", 2)
    assert (bottleneck.policy.mask_context_gate, bottleneck.policy.mask_context_after) == (1, 1)

    # The served model chooses exactly the codes the evaluated one does, gate included.
    local = load_model(config)
    mask = load_mask(trained.run_dir / "masks" / "active.json")
    apply_mask(local, mask)
    h = local.bottleneck.codes.detach()[:40] + 0.1
    codes = served.codebook_model.bottleneck.code_ids(h)
    assert codes.eq(local.bottleneck.code_ids(h)).all()
    sequences = h.view(2, 20, -1)  # the context gate counts gated tokens along each sequence
    assert bottleneck(sequences).codes.eq(local.bottleneck(sequences).codes).all()
    ungated = local.bottleneck.code_ids(h)
    local.bottleneck.serve(replace(local.bottleneck.policy, mask_gate=1, mask_context_gate=0))
    assert not ungated.eq(local.bottleneck.code_ids(h)).all()  # the gate changes which slots are emptied


def test_a_prompt_conditioned_version_serves_each_request_as_its_detector_says(trained: Setup):
    config = trained.config
    prompted = replace(config.bottleneck, mask_policy="zero", mask_condition="prompt")
    config = replace(config, bottleneck=prompted, mining=replace(config.mining, detector_recall=0.5))
    outcome = tracked.run_pipeline(config)

    tracker = Tracker(config)
    version = MlflowClient(tracker.uri).get_model_version(tracker.masked_name, outcome["mask_version"])
    assert version.tags["mask_condition"] == "prompt"
    mlflow.set_tracking_uri(tracker.uri)
    served = mlflow.pyfunc.load_model(f"models:/{tracker.masked_name}/{version.version}")
    model = served.unwrap_python_model()
    assert model.codebook_model.bottleneck.policy.mask_condition == "prompt"
    detector = load_mask(trained.run_dir / "masks" / "active.json").detectors["noun.food"]
    assert model.mask.detectors == {"noun.food": detector}

    # Each request is the prompt: a flagged one is answered with the mask, the others as the codebook
    # model answers them.
    texts = read_splits(trained.run_dir / "data" / "topic").forget_test.column("text").to_pylist()
    prompts = [text[: text.index(":") + 1] for text in texts[:8] if ":" in text]
    local = load_model(config)
    flags = detector.flags(prompt_features(local, prompts, config.data.max_length))
    assert flags.any() and not flags.all()
    apply_mask(model.codebook_model, None)
    unmasked = [model._generate(prompt, 6) for prompt in prompts]
    apply_mask(model.codebook_model, model.mask)
    answers = served.predict(prompts, params={"max_new_tokens": 6})
    for prompt, flagged, answer, plain in zip(prompts, flags, answers, unmasked, strict=True):
        if not flagged:
            assert answer == plain, prompt
    # Inside the served generation: a flagged prompt's codes are all emptied and no masked code is
    # used after it; an unflagged request keeps every code, masked ones included.
    bottleneck, masked = model.codebook_model.bottleneck, torch.tensor(model.mask.code_ids)
    steps: list[torch.Tensor] = []
    hook = bottleneck.register_forward_hook(lambda _module, _inputs, output: steps.append(output.codes[0]))
    try:
        for prompt, flagged in zip(prompts, flags, strict=True):
            steps.clear()
            served.predict([prompt], params={"max_new_tokens": 4})
            prompt_codes, later = steps[0][1:], torch.cat(steps[1:])
            assert len(steps) == 4 and bool((prompt_codes == NO_CODE).all()) == bool(flagged), prompt
            assert (later != NO_CODE).all() if not flagged else not torch.isin(later, masked).any(), prompt
    finally:
        hook.remove()
