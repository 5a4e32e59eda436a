"""Definition generation: can a model still define a held-out lemma of a topic?

Each held-out WordNet record gives a prompt in the form the training texts have, "<lemma>:" after
BOS, and a reference, its gloss. The model continues the prompt greedily for up to `max_new_tokens`
(ending early at EOS); the first line with text is its definition. Scores are corpus chrF (sacrebleu,
0-100) per topic against the references. chrF rewards any gloss-like text of the right topic, so each
topic also gets a floor: the chrF of another held-out lemma's gloss of the same topic, what knowing
the format and the topic alone earns.

Causal LMs decode batches of prompts of exactly equal length: left padding would move BOS off
position 0, which the bottleneck passes through, and quantize it like content.
"""

from __future__ import annotations

import importlib.util
import logging
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from codeunlearn.core.config import DefinitionConfig
from codeunlearn.core.errors import CodeunlearnError, MissingAssetError
from codeunlearn.core.progress import progress
from codeunlearn.core.serialization import without_nan
from codeunlearn.data.batching import bos_id
from codeunlearn.evaluation.probes import terms_and_definitions, topic_table

log = logging.getLogger(__name__)

CHRF_INSTALL = "pip install sacrebleu (or pip install -e '.[translation]')"
FLOOR = "other gloss"  # the floor's column: another same-topic lemma's gloss as the definition


@dataclass(frozen=True)
class Definition:
    """One held-out record to define: its topic, the lemma prompted and the reference gloss."""

    topic: str
    lemma: str
    gloss: str


def require_chrf() -> None:
    """Raises MissingAssetError, naming the install command, when sacrebleu is missing."""
    if importlib.util.find_spec("sacrebleu") is None:
        raise MissingAssetError(
            f"the definition probe scores with chrF from sacrebleu: `{CHRF_INSTALL}`, or turn the probe "
            "off (`codeunlearn probe --no-definitions`)"
        )


def definition_items(table: pa.Table, forget_topic: str, config: DefinitionConfig) -> list[Definition]:
    """A seeded sample of held-out records per topic: `forget_lemmas` of the forgotten topic and
    `lemmas_per_topic` of every other label (all of a smaller topic), topics in sorted order.

    Args:
        table: Held-out records with `label` and `lemmas`/`gloss` columns (or "term: definition" texts).
        forget_topic: The forgotten label.
        config: Counts and seed.

    Returns:
        The records, grouped by topic; the same table, topic and config give the same list.

    Raises:
        CodeunlearnError: no `label` column, or no held-out record of `forget_topic`.
    """
    config.validate()
    if "label" not in table.column_names:
        raise CodeunlearnError(
            "the definition probe needs a `label` column: it samples held-out records per label"
        )
    lemmas, glosses = terms_and_definitions(table)
    by_topic: dict[str, list[int]] = defaultdict(list)
    for row, label in enumerate(table.column("label").to_pylist()):
        by_topic[str(label)].append(row)
    if forget_topic not in by_topic:
        raise CodeunlearnError(f"no held-out records of {forget_topic!r} to ask definitions of")
    rng = np.random.default_rng(config.seed)
    items = []
    for topic in sorted(by_topic):
        wanted = config.forget_lemmas if topic == forget_topic else config.lemmas_per_topic
        rows = sorted(int(r) for r in rng.permutation(by_topic[topic])[:wanted])
        items += [Definition(topic, lemmas[row], glosses[row]) for row in rows]
    return items


def prompt_ids(tokenizer: Any, lemmas: Sequence[str]) -> list[list[int]]:
    """BOS + "<lemma>:" per lemma: the start of a training text, `"<lemma>: <gloss>"`."""
    start = bos_id(tokenizer)
    encoded = tokenizer([f"{lemma}:" for lemma in lemmas], add_special_tokens=False)["input_ids"]
    return [[start, *ids] for ids in encoded]


def equal_length_groups(ids: Sequence[Sequence[int]], batch_size: int) -> list[list[int]]:
    """Rows of `ids` in batches of at most `batch_size` sequences that all have the same length."""
    order = sorted(range(len(ids)), key=lambda row: (len(ids[row]), row))
    groups: list[list[int]] = []
    for row in order:
        if groups and len(groups[-1]) < batch_size and len(ids[groups[-1][0]]) == len(ids[row]):
            groups[-1].append(row)
        else:
            groups.append([row])
    return groups


def first_line(text: str) -> str:
    """The first line of a continuation that holds text, stripped: where a definition ends.

    A line break right after the prompt does not end it (a base model may start its answer on a new
    line); the next one does."""
    return text.strip().split("\n", 1)[0].strip()


@torch.no_grad()
def generate_definitions(
    model: torch.nn.Module, tokenizer: Any, lemmas: Sequence[str], config: DefinitionConfig
) -> list[str]:
    """Greedy definitions of `lemmas`, in order (see `first_line`).

    Args:
        model: A causal LM; a codebook model's `.model` decodes through its bottleneck and mask.
        tokenizer: The model's tokenizer.
        lemmas: The words to define.
        config: `max_new_tokens` and `batch_size`.

    Returns:
        One definition per lemma, possibly empty.
    """
    ids = prompt_ids(tokenizer, lemmas)
    device = next(model.parameters()).device
    definitions = [""] * len(ids)
    for rows in progress(equal_length_groups(ids, config.batch_size), desc="defining lemmas"):
        input_ids = torch.tensor([ids[row] for row in rows], device=device)  # (B, T) no padding
        generated = model.generate(
            input_ids=input_ids,
            attention_mask=torch.ones_like(input_ids),
            max_new_tokens=config.max_new_tokens,
            do_sample=False,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
        texts = tokenizer.batch_decode(generated[:, input_ids.shape[1] :], skip_special_tokens=True)
        for row, text in zip(rows, texts, strict=True):
            definitions[row] = first_line(text)
    return definitions


def chrf_by_topic(items: Sequence[Definition], hypotheses: Sequence[str]) -> dict[str, float]:
    """Corpus chrF (0-100) of each topic's hypotheses against its items' glosses, topics in order of
    first appearance.

    Raises:
        ValueError: a different number of hypotheses than items.
    """
    import sacrebleu

    if len(items) != len(hypotheses):
        raise ValueError(f"{len(hypotheses)} definitions for {len(items)} lemmas: give one per lemma")
    pairs: dict[str, tuple[list[str], list[str]]] = {}  # topic -> (definitions, glosses)
    for item, hypothesis in zip(items, hypotheses, strict=True):
        generated, glosses = pairs.setdefault(item.topic, ([], []))
        generated.append(hypothesis)
        glosses.append(item.gloss)
    return {
        topic: float(sacrebleu.corpus_chrf(generated, [glosses]).score)
        for topic, (generated, glosses) in pairs.items()
    }


def floor_by_topic(items: Sequence[Definition]) -> dict[str, float]:
    """Per topic, the chrF of answering each lemma with the next same-topic item's gloss (cyclically):
    a definition of the right topic and format that knows nothing of the lemma. NaN for a topic of
    one item."""
    by_topic: dict[str, list[Definition]] = defaultdict(list)
    for item in items:
        by_topic[item.topic].append(item)
    ordered = [item for group in by_topic.values() for item in group]
    answers = [group[(i + 1) % len(group)].gloss for group in by_topic.values() for i in range(len(group))]
    scores = chrf_by_topic(ordered, answers)
    return {topic: score if len(by_topic[topic]) > 1 else float("nan") for topic, score in scores.items()}


@dataclass
class DefinitionResult:
    """chrF per topic of every model variant, and the floor per topic."""

    forget_topic: str
    lemmas: dict[str, int]  # per topic
    max_new_tokens: int
    floor: dict[str, float]
    chrf: dict[str, dict[str, float]] = field(default_factory=dict)  # variant -> topic -> chrF

    def to_markdown(self) -> str:
        """The per-topic table (the floor after the variants), then one summary line per edited variant."""
        edited = [v for v in self.chrf if v not in ("base", "codebook")]
        lines = [
            f'Definition generation: chrF (0-100) of each model\'s greedy continuation of "<lemma>:" '
            f"(at most {self.max_new_tokens} new tokens, first line) against the held-out gloss; "
            f"'{FLOOR}' scores another held-out lemma's gloss of the same topic (format and topic, "
            f"no knowledge of the lemma); forgotten topic: {self.forget_topic}",
            "",
            topic_table({**self.chrf, FLOOR: self.floor}, self.lemmas, "lemmas", edited),
            "",
        ]
        lines += [definition_summary(self.chrf, variant, self.forget_topic) for variant in edited]
        return "\n".join(lines) + "\n"

    def to_json(self) -> dict:
        return {
            "lemmas": self.lemmas,
            "max_new_tokens": self.max_new_tokens,
            "floor": without_nan(self.floor),  # null for a topic of one lemma
            "chrf": self.chrf,
        }


def definition_summary(chrf: Mapping[str, Mapping[str, float]], variant: str, forget_topic: str) -> str:
    """One line: the forgotten topic's chrF change under `variant`, and the mean and worst change of
    the retained topics, all against the codebook model."""
    codebook, edited = chrf["codebook"], chrf[variant]
    changes = {t: edited[t] - codebook[t] for t in codebook if t != forget_topic}
    line = (
        f"- {variant}: forgotten topic chrF {codebook[forget_topic]:.1f} -> {edited[forget_topic]:.1f} "
        f"({edited[forget_topic] - codebook[forget_topic]:+.1f})"
    )
    if changes:
        worst = min(changes, key=changes.get)
        line += (
            f"; retained topics {float(np.mean(list(changes.values()))):+.1f} on average, "
            f"worst {worst} {changes[worst]:+.1f}"
        )
    return line
