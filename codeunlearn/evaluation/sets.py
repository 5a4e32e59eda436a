"""The held-out evaluation sets of a topic's splits, batched for scoring."""

from __future__ import annotations

from codeunlearn.data.tables import batch_texts
from codeunlearn.data.topic_words import keyword_free_rows
from codeunlearn.data.topics import Splits
from codeunlearn.evaluation.evaluator import KEYWORD_FREE, EvalSet


def eval_sets_of(splits: Splits, tokenizer, max_length: int, batch_size: int) -> list[EvalSet]:
    """The held-out forget set (with its keyword-free examples as a subset, scored as the split
    `forget_keyword_free` when there are any) and the retain set grouped by topic, batched
    (`batch_size` texts of at most `max_length` tokens: the run's eval.batch_size and data.max_length)."""
    sets = []
    for name in ("forget", "retain"):
        table = getattr(splits, f"{name}_test")
        texts = table.column("text").to_pylist()
        groups = table.column("topic").to_pylist() if "topic" in table.column_names else [name] * len(texts)
        groups = [str(g) if g is not None else name for g in groups]
        keyword_free = keyword_free_rows(table) if name == "forget" else []
        sets.append(
            EvalSet(
                name,
                batch_texts(texts, tokenizer, max_length, batch_size),
                groups,
                subsets={KEYWORD_FREE: keyword_free} if len(keyword_free) else {},
            )
        )
    return sets
