"""Masking against gradient baselines on the same codebook model, data and evaluation.

Every method starts from the trained codebook model in `run_dir/model` and is scored on the same
held-out forget and retain sets (normalised drop: 0 = codebook model, 1 = base model), with a
loss-based and a Min-K% membership-inference AUC (forget examples the codebook model was trained on
against held-out forget examples), and the wall-clock each needed to answer the request.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, replace

from codeunlearn.baselines.registry import unlearn_with_gradients
from codeunlearn.core.config import BaselineConfig, ProbeConfig, RunConfig
from codeunlearn.core.paths import open_run
from codeunlearn.data.tables import batch_texts, other_train_texts
from codeunlearn.data.topics import Splits, read_splits
from codeunlearn.evaluation.attacks import relearning_curve
from codeunlearn.evaluation.evaluator import EvalSet, Evaluator, normalized_drop
from codeunlearn.evaluation.knowledge import KnowledgeProbe, ProbeResult
from codeunlearn.evaluation.method_scores import MethodScore
from codeunlearn.evaluation.privacy import mia_auc, per_token_logprobs
from codeunlearn.evaluation.quantization import weights_quantized
from codeunlearn.evaluation.sets import eval_sets_of
from codeunlearn.model import assets
from codeunlearn.model.loading import load_model
from codeunlearn.model.surgery import CodebookModel
from codeunlearn.pipeline.training_texts import training_texts
from codeunlearn.unlearning.masks import Mask, apply_mask
from codeunlearn.unlearning.recipe import TopicBatches, detector_data, mine_mask
from codeunlearn.unlearning.topic_detector import PromptSet, prompt_set, text_set

log = logging.getLogger(__name__)


@dataclass
class Comparison:
    scores: list[MethodScore]
    probe: ProbeResult | None = None  # multiple-choice accuracy of every method, when asked for


def compare(
    config: RunConfig,
    methods: tuple[str, ...],
    baseline: BaselineConfig,
    forget_limit: int,
    relearn_steps: tuple[int, ...] = (),
    probe: ProbeConfig | None = None,
    quantize_bits: tuple[int, ...] = (),
) -> Comparison:
    """Score the codebook model, a mask mined on the whole forget set and one mined on the baselines'
    forget subset (`forget_limit` examples), and each gradient method trained on that subset. With
    `relearn_steps`, also attack the full mask and each baseline by fine-tuning on the subset; with
    `probe`, also run the multiple-choice knowledge probe on the base model and every method; with
    `quantize_bits`, also score every method with its weights rounded to each bit width."""
    paths = open_run(config)
    splits = read_splits(paths.splits_dir)
    forget_texts = splits.forget_train.column("text").to_pylist()
    members, nonmembers = membership_sets(config, splits)
    subset, retain = baseline_texts(splits, members, forget_limit)
    members = members[:forget_limit]  # MIA asks about exactly the examples the baselines unlearn first
    log.info(
        "forget subset %d examples; MIA: %d members, %d non-members",
        len(subset),
        len(members),
        len(nonmembers),
    )
    codebook_model = load_model(config)
    sets = eval_sets_of(splits, codebook_model.tokenizer, config.data.max_length, config.eval.batch_size)
    knowledge = KnowledgeProbe(config, probe, codebook_model) if probe else None
    scorer = _Scorer(
        config, sets, _base_scores(config, codebook_model, sets, knowledge), members, nonmembers, knowledge
    )
    scorer.quantize_bits = quantize_bits
    scores = [scorer.score("codebook", codebook_model, None, 0.0)]
    if relearn_steps:  # the control: how far the same attack lowers forget NLL with nothing unlearned
        control_attack = _Attack(config, subset, sets[0], scores[0].forget_nll, baseline.lr, relearn_steps)
        scores[0].relearning = control_attack.run(load_model(config), None)
    control = splits.control_train.column("text").to_pylist()
    negatives = _negatives(config, codebook_model)
    for forget, control_part in ((forget_texts, control), (subset, control[:forget_limit])):
        started = time.perf_counter()
        mask = _mine(config, codebook_model, forget, control_part, negatives)
        elapsed = time.perf_counter() - started + (negatives.elapsed_s if negatives else 0.0)
        scores.append(scorer.score(f"mask ({len(forget)} mined)", codebook_model, mask, elapsed))
        scores[-1].forget_examples = len(forget)
        if relearn_steps and forget is forget_texts:
            attack = _Attack(config, subset, sets[0], scores[0].forget_nll, baseline.lr, relearn_steps)
            scores[-1].relearning = attack.run(load_model(config), mask)
    for method in methods:
        edited = load_model(config)
        tokenizer = edited.tokenizer
        result = unlearn_with_gradients(
            edited.model,
            batch_texts(subset, tokenizer, config.data.max_length, baseline.batch_size),
            batch_texts(retain, tokenizer, config.data.max_length, baseline.batch_size),
            replace(baseline, method=method),
        )
        score = scorer.score(method, edited, None, result.elapsed_s)
        score.flops, score.forget_examples = result.flops_estimate, len(subset)
        if relearn_steps:
            score.relearning = _Attack(
                config, subset, sets[0], scores[0].forget_nll, baseline.lr, relearn_steps
            ).run(edited, None)
        scores.append(score)
        del edited
    if knowledge is not None:
        for score in scores[1:]:
            knowledge.judge(score.method)
    return Comparison(scores, knowledge.result if knowledge else None)


def baseline_texts(splits: Splits, members: list[str], forget_limit: int) -> tuple[list[str], list[str]]:
    """What a gradient baseline trains on: `forget_limit` forget examples, those the codebook model was
    trained on (`members`) first, and 4x as many retain examples."""
    trained = set(members)
    forget = splits.forget_train.column("text").to_pylist()
    subset = (members + [t for t in forget if t not in trained])[:forget_limit]
    return subset, splits.retain_train.column("text").to_pylist()[: 4 * forget_limit]


def membership_sets(config: RunConfig, splits: Splits) -> tuple[list[str], list[str]]:
    """Forget-topic examples the codebook model was trained on, and held-out ones it never saw."""
    trained = set(training_texts(config))
    members = [t for t in splits.forget_train.column("text").to_pylist() if t in trained]
    return members, splits.forget_test.column("text").to_pylist()


def _base_scores(
    config: RunConfig, codebook_model: CodebookModel, sets, knowledge: KnowledgeProbe | None
) -> dict[str, float]:
    model, _ = assets.load_pretrained(config.model.name, codebook_model.device.type)
    if knowledge is not None:
        knowledge.score_model("base", model, codebook_model)
    return Evaluator(codebook_model, sets).score_model(model)


@dataclass
class _Negatives:
    """The prompt detector's negatives, their features computed once for every mask compare mines;
    each mask's wall-clock is still charged their computing time, as a lone request would pay it."""

    prompts: PromptSet
    elapsed_s: float


def _negatives(config: RunConfig, codebook_model: CodebookModel) -> _Negatives | None:
    if not config.mining.detector_recall:
        return None
    started = time.perf_counter()
    of_texts = text_set if config.bottleneck.mask_condition == "text" else prompt_set
    prompts = of_texts(
        codebook_model, other_train_texts(config, config.mining.detector_negatives), config.data.max_length
    )
    return _Negatives(prompts, time.perf_counter() - started)


def _mine(
    config: RunConfig,
    codebook_model: CodebookModel,
    forget: list[str],
    control: list[str],
    negatives: _Negatives | None,
) -> Mask:
    batch, tokenizer = config.mining.batch_size, codebook_model.tokenizer
    batches = TopicBatches(
        *(batch_texts(texts, tokenizer, config.data.max_length, batch) for texts in (forget, control))
    )
    # under mining.detector_recall, a detector of the same forget texts' prompts, as mining would fit
    detectors = detector_data(config, forget, negatives.prompts if negatives else None)
    return mine_mask(codebook_model, "subset", batches, config.mining, detectors).mask


@dataclass
class _Attack:
    """The relearning attack every method faces: the same steps on the same forget text."""

    config: RunConfig
    texts: list[str]
    forget_set: EvalSet
    codebook_forget_nll: float
    lr: float
    steps: tuple[int, ...]

    def run(self, model: CodebookModel, mask: Mask | None) -> list[dict[str, float]]:
        batches = batch_texts(self.texts, model.tokenizer, self.config.data.max_length, 8)
        points = relearning_curve(
            model, mask, batches, self.forget_set, self.steps, self.codebook_forget_nll, self.lr
        )
        return [asdict(point) for point in points]


class _Scorer:
    """NLL on the held-out sets and MIA AUCs for one model variant; drops against the codebook model,
    which is scored first."""

    def __init__(
        self,
        config: RunConfig,
        sets,
        base: dict[str, float],
        members: list[str],
        nonmembers: list[str],
        knowledge: KnowledgeProbe | None = None,
    ):
        self.config, self.sets, self.base = config, sets, base
        self.members, self.nonmembers, self.knowledge = members, nonmembers, knowledge
        self.quantize_bits: tuple[int, ...] = ()
        self.codebook: dict[str, float] = {}

    def score(self, name: str, model: CodebookModel, mask: Mask | None, seconds: float) -> MethodScore:
        nll = Evaluator(model, self.sets).score_codebook(mask)  # a new Evaluator: edited weights below too
        self.codebook = self.codebook or nll
        if self.knowledge is not None:
            self.knowledge.score_codebook(name, model, mask)
        apply_mask(model, mask)
        try:
            batch = self.config.eval.batch_size
            member_lp, nonmember_lp = (
                per_token_logprobs(
                    model.model, batch_texts(texts, model.tokenizer, self.config.data.max_length, batch)
                )
                for texts in (self.members, self.nonmembers)
            )
        finally:
            apply_mask(model, None)
        drop = {k: normalized_drop(self.base[k], self.codebook[k], nll[k]) for k in ("forget", "retain")}
        log.info("%s: forget %.4f retain %.4f", name, nll["forget"], nll["retain"])
        quantized = []
        for bits in self.quantize_bits:  # drops stay relative to the full-precision base and codebook
            with weights_quantized(model.model, bits):
                q = Evaluator(model, self.sets).score_codebook(mask)
            quantized.append(
                {"bits": bits, "forget_nll": q["forget"], "retain_nll": q["retain"]}
                | {
                    f"{k}_drop": normalized_drop(self.base[k], self.codebook[k], q[k])
                    for k in ("forget", "retain")
                }
            )
        return MethodScore(
            quantized=quantized,
            method=name,
            forget_nll=nll["forget"],
            retain_nll=nll["retain"],
            forget_drop=drop["forget"],
            retain_drop=drop["retain"],
            mia_auc_loss=mia_auc(member_lp, nonmember_lp, "loss"),
            mia_auc_min_k=mia_auc(member_lp, nonmember_lp, "min_k"),
            wall_clock_s=seconds,
        )
