"""The definition probe: lemma sample, trimming, chrF per topic, and greedy decoding through the
bottleneck with a mask in force."""

from __future__ import annotations

import math

import pyarrow as pa
import pytest
import sacrebleu
import torch

from codeunlearn.core.config import BottleneckConfig, DefinitionConfig
from codeunlearn.core.errors import CodeunlearnError
from codeunlearn.evaluation.definitions import (
    Definition,
    DefinitionResult,
    chrf_by_topic,
    definition_items,
    definition_summary,
    equal_length_groups,
    first_line,
    floor_by_topic,
    generate_definitions,
    prompt_ids,
)
from codeunlearn.model.surgery import insert_bottleneck
from codeunlearn.unlearning.masks import apply_mask, mask_from_codes


def _table() -> pa.Table:
    rows = [
        {"lemmas": [f"{topic}{i}", "other"], "gloss": f"gloss of {topic}{i}", "label": topic}
        for topic in ("food", "animal", "plant")
        for i in range(6)
    ]
    return pa.Table.from_pylist(rows)


def test_lemma_sample_is_seeded_per_topic_and_uses_the_first_lemma():
    config = DefinitionConfig(forget_lemmas=4, lemmas_per_topic=2, seed=5)
    items = definition_items(_table(), "food", config)

    assert [item.topic for item in items] == ["animal"] * 2 + ["food"] * 4 + ["plant"] * 2
    assert all(item.gloss == f"gloss of {item.lemma}" for item in items)  # lemma and gloss of one record
    assert items == definition_items(_table(), "food", config)
    others = [definition_items(_table(), "food", DefinitionConfig(4, 2, seed=s)) for s in range(1, 6)]
    assert any(other != items for other in others)  # the seed picks the lemmas
    everything = definition_items(_table(), "food", DefinitionConfig(forget_lemmas=50, lemmas_per_topic=50))
    assert len(everything) == 18  # a topic smaller than asked gives all its records


def test_lemma_sample_refuses_a_topic_without_held_out_records_and_bad_counts():
    with pytest.raises(CodeunlearnError, match="noun.time"):
        definition_items(_table(), "noun.time", DefinitionConfig())
    with pytest.raises(CodeunlearnError, match="max_new_tokens"):
        DefinitionConfig(max_new_tokens=0).validate()


def test_a_definition_ends_at_the_first_line_break_after_text():
    assert first_line(" a baked food\nbread: more") == "a baked food"
    assert first_line("\n\n  a baked food \n") == "a baked food"  # a leading break does not end it
    assert first_line("") == "" and first_line("\n\n") == ""


def test_prompts_are_bos_and_the_start_of_a_training_text(tokenizer):
    ids = prompt_ids(tokenizer, ["bread"])[0]
    text = tokenizer("bread: food made from dough", add_special_tokens=False)["input_ids"]
    assert ids[0] == tokenizer.bos_token_id and ids[1:] == text[: len(ids) - 1]
    assert tokenizer.decode(ids[1:]) == "bread:"


def test_equal_length_groups_never_mix_prompt_lengths():
    ids = [[1, 2], [1, 2, 3], [4, 5], [6, 7], [8, 9]]
    assert equal_length_groups(ids, 2) == [[0, 2], [3, 4], [1]]


def test_chrf_is_a_corpus_score_per_topic():
    items = [
        Definition("food", "bread", "food made from dough of flour"),
        Definition("food", "soup", "liquid food of meat or fish stock"),
        Definition("plant", "oak", "a deciduous tree of the genus Quercus"),
    ]
    hypotheses = ["food made from dough of flour", "", "a tree"]
    scores = chrf_by_topic(items, hypotheses)

    assert list(scores) == ["food", "plant"]
    food = sacrebleu.corpus_chrf(hypotheses[:2], [[i.gloss for i in items[:2]]]).score
    assert scores["food"] == pytest.approx(food)
    # Corpus statistics, not the mean of sentence scores (100 and 0).
    assert scores["food"] != pytest.approx(50.0)
    assert 0 < scores["plant"] < 100
    assert chrf_by_topic(items, [i.gloss for i in items]) == {"food": 100.0, "plant": 100.0}
    with pytest.raises(ValueError, match="one per lemma"):
        chrf_by_topic(items, hypotheses[:2])


def test_floor_answers_with_another_gloss_of_the_same_topic():
    items = [
        Definition("food", "a", "food made from dough"),
        Definition("food", "b", "food made from dough"),
        Definition("plant", "c", "a tree"),
    ]
    floor = floor_by_topic(items)
    assert floor["food"] == 100.0  # the other food gloss is identical
    assert math.isnan(floor["plant"])  # one lemma: no other gloss to answer with
    result = DefinitionResult(
        "food", {"food": 2, "plant": 1}, 8, floor, {"codebook": {"food": 1, "plant": 2}}
    )
    assert result.to_json()["floor"] == {"food": 100.0, "plant": None}  # JSON has no NaN
    assert "| plant | 1 | 2.0 | nan |" in result.to_markdown()


def test_summary_reports_the_forgotten_topic_and_the_worst_retained_one():
    chrf = {
        "codebook": {"food": 40.0, "animal": 30.0, "plant": 20.0},
        "masked": {"food": 25.0, "animal": 29.0, "plant": 17.0},
    }
    line = definition_summary(chrf, "masked", "food")
    assert "40.0 -> 25.0 (-15.0)" in line and "-2.0 on average" in line
    assert "worst plant -3.0" in line


def test_decoding_goes_through_the_bottleneck_with_the_mask_and_the_kv_cache(tiny_llama, tokenizer):
    codebook_model = insert_bottleneck(
        tiny_llama, tokenizer, BottleneckConfig(layer=0, n_codes=16, top_k=2), "t"
    )
    lemmas = ["bread", "ice cream", "oak", "cat"]
    config = DefinitionConfig(max_new_tokens=6, batch_size=4)
    apply_mask(codebook_model, mask_from_codes(16, "x", [0, 1, 2, 3]))
    try:
        batched = generate_definitions(tiny_llama, tokenizer, lemmas, config)
        alone = [generate_definitions(tiny_llama, tokenizer, [lemma], config)[0] for lemma in lemmas]
        uncached = [_greedy_without_cache(tiny_llama, tokenizer, lemma, config) for lemma in lemmas]
    finally:
        apply_mask(codebook_model, None)
    assert batched == alone == uncached
    unmasked = generate_definitions(tiny_llama, tokenizer, lemmas, config)
    assert unmasked != batched  # the mask changes the codes, hence the continuations


def _greedy_without_cache(model, tokenizer, lemma: str, config: DefinitionConfig) -> str:
    """Full forwards over the whole sequence at every step: the bottleneck sees every position."""
    ids = torch.tensor([prompt_ids(tokenizer, [lemma])[0]])
    start = ids.shape[1]
    with torch.no_grad():
        for _ in range(config.max_new_tokens):
            token = model(input_ids=ids).logits[0, -1].argmax()
            ids = torch.cat([ids, token.view(1, 1)], dim=1)
            if int(token) == tokenizer.eos_token_id:
                break
    return first_line(tokenizer.decode(ids[0, start:], skip_special_tokens=True))
