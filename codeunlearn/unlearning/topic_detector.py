"""A linear detector of a topic on the bottleneck's input: is this prompt (or text) about the
forgotten topic?

The codes a mask holds do not tell a topic's lemmas from its neighbours' (code weights that flag 40%
of noun.food lemmas flag 16-19% of plant, animal and substance lemmas), but the residual they are
chosen from does (2-3%; docs/results/knowledge-probe.md). A prompt-conditioned
mask uses this detector to decide which requests the mask acts on; scripts/knowledge_locality.py
measures it on the knowledge probe.

A class-balanced, L2-regularised logistic regression on standardised features, fitted by LBFGS in
torch (no new dependency); its threshold is set by the recall it reaches on held-out folds of the
training data, never on the evaluation data.

Its features are those of a prompt: the bottleneck's input averaged over the prompt's tokens after
BOS (`prompt_features`), where the prompt of a "term: definition" text is the text through its
first ':' (`prompt_of`), tokenised on its own as the knowledge probe and a served request are.
A text detector (bottleneck.mask_condition=text) averages over the whole text instead
(`fit_text_detector`); the bottleneck applies it to the mean of each text's inputs so far.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from codeunlearn.core.errors import CodeunlearnError
from codeunlearn.core.progress import progress
from codeunlearn.data.batching import bos_id, make_batches
from codeunlearn.model.surgery import CodebookModel, bypassed, forward_to_site

MIN_TOPIC_PROMPTS = 10  # fewer than this leaves a cross-validation fold without the topic


@dataclass(frozen=True)
class TopicDetector:
    """score(x) = ((x - mean) / std) . weight + bias, the log odds of the topic; flagged at >= threshold."""

    mean: tuple[float, ...]
    std: tuple[float, ...]
    weight: tuple[float, ...]
    bias: float
    threshold: float = 0.0
    recall: float | None = None  # the held-out recall the threshold was set at, if it was

    def score(self, features: np.ndarray) -> np.ndarray:
        """Log odds per row of `features` (N, d)."""
        features = np.asarray(features, dtype=np.float64)
        if features.ndim != 2 or features.shape[1] != len(self.weight):
            raise CodeunlearnError(
                f"detector features have shape {features.shape}, but the detector was fitted on "
                f"{len(self.weight)}-wide vectors: score the bottleneck input of the model it was fitted on"
            )
        z = (features - np.asarray(self.mean)) / np.asarray(self.std)
        return z @ np.asarray(self.weight) + self.bias

    def flags(self, features: np.ndarray) -> np.ndarray:
        """(N,) bool: the rows scoring at or above the threshold."""
        return self.score(features) >= self.threshold

    def as_linear(self) -> tuple[np.ndarray, float]:
        """(w, c) with x . w + c >= 0 exactly where `flags(x)`: the form the bottleneck applies."""
        weight = np.asarray(self.weight) / np.asarray(self.std)
        return weight, float(self.bias - np.asarray(self.mean) @ weight - self.threshold)

    @property
    def digest(self) -> str:
        """sha256 of the detector's JSON: a mask's digest covers its detectors."""
        return hashlib.sha256(json.dumps(asdict(self)).encode()).hexdigest()

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self)))

    @classmethod
    def load(cls, path: Path) -> TopicDetector:
        return cls.from_dict(json.loads(path.read_text()))

    @classmethod
    def from_dict(cls, payload: dict) -> TopicDetector:
        """The detector `asdict` wrote (lists back to tuples)."""
        return cls(
            **{key: tuple(value) if isinstance(value, list) else value for key, value in payload.items()}
        )


def fit_logistic(features: np.ndarray, labels: np.ndarray, l2: float = 1e-3) -> TopicDetector:
    """The detector minimising the class-balanced mean log loss on standardised features plus
    l2 * |weight|^2 / 2 (threshold 0: even odds after balancing).

    Raises:
        CodeunlearnError: labels of one class only.
    """
    x = torch.as_tensor(np.asarray(features), dtype=torch.float64)
    y = torch.as_tensor(np.asarray(labels), dtype=torch.float64)
    share = float(y.mean()) if len(y) else 0.0
    if not 0 < share < 1:
        raise CodeunlearnError("a topic detector needs examples both of the topic and of other topics")
    mean, std = x.mean(0), x.std(0).clamp_min(1e-6)
    z = (x - mean) / std
    balance = torch.where(y > 0, 0.5 / share, 0.5 / (1 - share))  # each class weighs half
    weight = torch.zeros(z.shape[1], dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS(
        [weight, bias],
        max_iter=500,
        tolerance_grad=1e-12,
        tolerance_change=1e-15,
        line_search_fn="strong_wolfe",
    )

    def objective() -> torch.Tensor:
        optimizer.zero_grad()
        value = F.binary_cross_entropy_with_logits(z @ weight + bias, y, weight=balance)
        value = value + l2 * weight.pow(2).sum() / 2
        value.backward()
        return value

    optimizer.step(objective)
    return TopicDetector(
        mean=tuple(mean.tolist()),
        std=tuple(std.tolist()),
        weight=tuple(weight.detach().tolist()),
        bias=float(bias.detach()),
    )


def fit_at_recall(
    features: np.ndarray, labels: np.ndarray, recall: float, folds: int = 5, l2: float = 1e-3, seed: int = 0
) -> tuple[TopicDetector, np.ndarray]:
    """The detector fitted on all rows, with its threshold at the score that `recall` of the topic's
    rows reach in `folds`-fold cross-validation; and those held-out scores (N,).

    Raises:
        CodeunlearnError: recall outside (0, 1], fewer than 2 folds, or a fold without both classes.
    """
    if not 0 < recall <= 1 or folds < 2:
        raise CodeunlearnError(f"recall={recall}, folds={folds}: need 0 < recall <= 1 and at least 2 folds")
    features, labels = np.asarray(features), np.asarray(labels, dtype=bool)
    fold = np.random.default_rng(seed).integers(0, folds, len(labels))
    held_out = np.zeros(len(labels))
    for k in range(folds):
        held_out[fold == k] = fit_logistic(features[fold != k], labels[fold != k], l2).score(
            features[fold == k]
        )
    threshold = float(np.quantile(held_out[labels], 1 - recall))
    detector = fit_logistic(features, labels, l2)
    return TopicDetector(**{**asdict(detector), "threshold": threshold, "recall": recall}), held_out


def prompt_of(text: str) -> str | None:
    """The prompt of a "term: definition" text: the text through its first ':' (None without one)."""
    end = text.find(":")
    return text[: end + 1] if end > 0 else None


@torch.no_grad()
def prompt_features(
    codebook_model: CodebookModel, prompts: Sequence[str], max_length: int, batch_size: int = 256
) -> np.ndarray:
    """The bottleneck's input averaged over each prompt's tokens after BOS (N, d): what the bottleneck
    scores at a prompted forward. Runs layers 0..layer only."""
    tokenizer, device = codebook_model.tokenizer, codebook_model.device
    start = bos_id(tokenizer)
    ids = [
        [start, *tokenizer(prompt, add_special_tokens=False)["input_ids"]][:max_length] for prompt in prompts
    ]
    features = np.zeros((len(ids), codebook_model.model.config.hidden_size), dtype=np.float32)
    with bypassed(codebook_model):
        for batch in progress(make_batches(ids, batch_size, tokenizer.pad_token_id), desc="prompt features"):
            batch = batch.to(device)
            hidden = forward_to_site(codebook_model, batch.input_ids, batch.attention_mask)[0].float()
            after_bos = batch.attention_mask.float()
            after_bos[:, 0] = 0
            means = (hidden * after_bos.unsqueeze(-1)).sum(1) / after_bos.sum(1, keepdim=True).clamp_min(1)
            features[batch.rows.cpu().numpy()] = means.cpu().numpy()
    return features


@dataclass(frozen=True)
class PromptSet:
    """The prompts of some texts (or the whole texts, `text_set`) and their features
    (`prompt_features`), computed once so that several detectors fitted against the same other texts
    do not recompute them."""

    prompts: tuple[str, ...]
    features: np.ndarray  # (len(prompts), d)
    n_texts: int  # the texts the prompts came from, those without a prompt included


def prompt_set(codebook_model: CodebookModel, texts: Sequence[str], max_length: int) -> PromptSet:
    """The prompts of those `texts` that have one (`prompt_of`), with their features."""
    prompts = tuple(p for p in map(prompt_of, texts) if p)
    if not prompts:
        return PromptSet(
            prompts, np.zeros((0, codebook_model.model.config.hidden_size), np.float32), len(texts)
        )
    return PromptSet(prompts, prompt_features(codebook_model, prompts, max_length), len(texts))


def text_set(codebook_model: CodebookModel, texts: Sequence[str], max_length: int) -> PromptSet:
    """Whole `texts` with their features, for text detectors (bottleneck.mask_condition=text)."""
    texts = tuple(texts)
    if not texts:
        return PromptSet(texts, np.zeros((0, codebook_model.model.config.hidden_size), np.float32), 0)
    return PromptSet(texts, prompt_features(codebook_model, texts, max_length), len(texts))


def fit_prompt_detector(
    codebook_model: CodebookModel,
    topic_texts: Sequence[str],
    others: Sequence[str] | PromptSet,
    recall: float,
    max_length: int,
    seed: int = 0,
) -> TopicDetector:
    """The detector of the topic's prompts against the other texts' prompts (`others`: the texts, or
    their `prompt_set` computed before), its threshold at `recall` of the topic's prompts in 5-fold
    cross-validation (`fit_at_recall`).

    Raises:
        CodeunlearnError: fewer than MIN_TOPIC_PROMPTS topic texts, or no other text, with a prompt.
    """
    topic = [p for p in map(prompt_of, topic_texts) if p]
    other_prompts = (
        others.prompts if isinstance(others, PromptSet) else [p for p in map(prompt_of, others) if p]
    )
    n_others = others.n_texts if isinstance(others, PromptSet) else len(others)
    if len(topic) < MIN_TOPIC_PROMPTS or not other_prompts:
        raise CodeunlearnError(
            f"a prompt detector needs texts of the form 'term: definition'; {len(topic)} of the topic's "
            f"{len(topic_texts)} texts and {len(other_prompts)} of {n_others} others have a ':' (at "
            f"least {MIN_TOPIC_PROMPTS} and 1 needed): set mining.detector_recall=0 and "
            "bottleneck.mask_condition=none for this corpus"
        )
    other_features = (
        others.features
        if isinstance(others, PromptSet)
        else prompt_features(codebook_model, other_prompts, max_length)
    )
    features = np.concatenate([prompt_features(codebook_model, topic, max_length), other_features])
    labels = np.arange(len(features)) < len(topic)
    detector, _ = fit_at_recall(features, labels, recall, seed=seed)
    return detector


def fit_text_detector(
    topic_features: np.ndarray, other_features: np.ndarray, recall: float, seed: int = 0
) -> TopicDetector:
    """The detector of the topic's whole texts against other texts, from their mean inputs
    (`prompt_features` of the texts themselves), its threshold at `recall` of the topic's texts in
    5-fold cross-validation (`fit_at_recall`).

    Raises:
        CodeunlearnError: fewer than MIN_TOPIC_PROMPTS topic texts, or no other text.
    """
    if len(topic_features) < MIN_TOPIC_PROMPTS or not len(other_features):
        raise CodeunlearnError(
            f"a text detector needs at least {MIN_TOPIC_PROMPTS} texts of the topic and 1 other text; "
            f"got {len(topic_features)} and {len(other_features)}: give the topic more examples, or set "
            "bottleneck.mask_condition=none"
        )
    features = np.concatenate([topic_features, other_features])
    labels = np.arange(len(features)) < len(topic_features)
    detector, _ = fit_at_recall(features, labels, recall, seed=seed)
    return detector
