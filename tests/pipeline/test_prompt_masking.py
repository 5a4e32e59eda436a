"""Prompt-conditioned masking on the tiny setup: mining fits the topic's prompt detector, the mask
carries it, and the knowledge probe's masked model differs from the codebook model exactly on the
questions whose prompt the detector flags, as computed apart from the bottleneck's forward."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from codeunlearn.core.config import ProbeConfig
from codeunlearn.core.errors import CodeunlearnError
from codeunlearn.core.paths import open_run
from codeunlearn.data.topics import read_splits
from codeunlearn.evaluation import certificate, knowledge
from codeunlearn.model.loading import load_model
from codeunlearn.pipeline import comparison
from codeunlearn.pipeline import stages as pipeline
from codeunlearn.pipeline.chain import run_all
from codeunlearn.unlearning.masks import load_mask
from codeunlearn.unlearning.recipe import detector_data, fit_detector
from codeunlearn.unlearning.topic_detector import TopicDetector, prompt_features

from .conftest import Setup

PROMPTED = {
    "bottleneck": {"mask_policy": "zero", "mask_condition": "prompt"},
    "mining": {"detector_recall": 0.5},
}


def test_a_prompted_mask_acts_on_the_questions_its_detector_flags_and_nowhere_else(make_setup):
    setup: Setup = make_setup(**PROMPTED)
    config = setup.config
    run_all(config)
    paths = open_run(config)

    stored = json.loads(paths.selection_file.read_text())["detector"]
    mask = load_mask(paths.active_mask)
    detector = mask.detectors["noun.food"]
    assert detector == TopicDetector.from_dict(stored) and detector.recall == 0.5
    block = certificate.build(config, json.loads((paths.eval_dir / "report.json").read_text()), {})
    assert block["mask"]["condition"] == "prompt"
    assert block["mask"]["detectors"] == {"noun.food": detector.digest}

    model = load_model(config)
    probe = knowledge.KnowledgeProbe(config, ProbeConfig(questions_per_topic=6, forget_questions=12), model)
    evaluator = probe.evaluator_for(model)
    codebook = evaluator.examples_codebook(None)["probe"][0]
    masked = evaluator.examples_codebook(mask)["probe"][0]

    # The detector applied to each prompt on its own, outside the bottleneck's forward.
    n_options = len(probe.questions[0].options)
    prompts = [f"{q.lemma}:" for q in probe.questions for _ in range(n_options)]
    n_conditional = len(prompts)
    prompts += [":"] * (len(probe.eval_set.groups) - n_conditional)  # the unconditional rows
    flagged = detector.flags(prompt_features(model, prompts, config.data.max_length))
    changed = ~np.isclose(masked, codebook, rtol=0, atol=1e-5)
    assert flagged.any() and not flagged.all()
    np.testing.assert_array_equal(changed, flagged)
    food = np.array([q.topic == "noun.food" for q in probe.questions]).repeat(n_options)
    assert flagged[:n_conditional][food].mean() > flagged[:n_conditional][~food].mean()

    # `codeunlearn compare` mines its masks afresh: each carries a detector of its own forget texts,
    # so the probe can score it under the prompt condition. The negatives' features, computed once
    # for all its masks, give the detector a lone request fitting on the same texts gets.
    splits = read_splits(paths.splits_dir)
    forget = splits.forget_train.column("text").to_pylist()[:40]
    negatives = comparison._negatives(config, model)
    control = splits.control_train.column("text").to_pylist()[:40]
    subset = comparison._mine(config, model, forget, control, negatives)
    assert subset.detectors["subset"] not in (None, detector)
    alone = fit_detector(model, config.mining, detector_data(config, forget))
    np.testing.assert_allclose(subset.detectors["subset"].weight, alone.weight, atol=1e-4)
    assert subset.detectors["subset"].threshold == pytest.approx(alone.threshold, abs=1e-4)
    assert np.isfinite(evaluator.examples_codebook(subset)["probe"][0]).all()

    # The same mask on text without a prompt: the configured gate (1), as `evaluate` scored it.
    nll = json.loads((paths.eval_dir / "report.json").read_text())["nll"]
    assert nll["masked"]["forget"] > nll["codebook"]["forget"]


def test_prompt_condition_refuses_a_mask_mined_without_a_detector(make_setup):
    setup: Setup = make_setup()
    run_all(setup.config)
    prompted = dataclasses.replace(make_setup("p", **PROMPTED).config, run_dir=setup.config.run_dir)
    before = open_run(prompted).active_mask.read_text()
    with pytest.raises(CodeunlearnError, match="holds no topic detector"):
        pipeline.unlearn(prompted)
    assert open_run(prompted).active_mask.read_text() == before  # nothing half-written
