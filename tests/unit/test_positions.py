"""Mining at a word topic's positions: spans of the topic words and their swaps, token flags, counts."""

from __future__ import annotations

import re

import pyarrow as pa
import pytest
import torch

from codeunlearn.core.config import (
    BottleneckConfig,
    ConfigError,
    MiningConfig,
    RunConfig,
    TopicConfig,
    TranslationConfig,
)
from codeunlearn.core.errors import CodeunlearnError
from codeunlearn.data.batching import encode_texts, make_batches
from codeunlearn.data.positions import split_spans, swapped_spans, token_flags, topic_word_spans
from codeunlearn.data.topics import topic_pattern
from codeunlearn.model.bottleneck import NO_CODE
from codeunlearn.model.surgery import insert_bottleneck, recording
from codeunlearn.translation.seq2seq import source_flags, source_ids
from codeunlearn.unlearning.mining import count_codes

KERNEL = re.compile(r"(?<!\w)(?:kernels|kernel)(?!\w)", re.IGNORECASE)


def test_swapped_spans_find_each_replacement():
    original = "The kernel loads modules; Kernels differ. kernel"
    swapped = "The sort loads modules; Objects differ. tree"
    assert [original[a:b] for a, b in topic_word_spans(original, KERNEL)] == ["kernel", "Kernels", "kernel"]
    spans = swapped_spans(original, swapped, KERNEL)
    assert [swapped[a:b] for a, b in spans] == ["sort", "Objects", "tree"]


def test_swapped_spans_with_a_replacement_that_contains_the_following_text():
    # " s" follows the match and also starts inside the replacement's neighbourhood: the splice check
    # is what guarantees the spans rebuild the control text exactly.
    original = "a kernel s b"
    swapped = "a sorts s b"
    spans = swapped_spans(original, swapped, KERNEL)
    assert [swapped[a:b] for a, b in spans] == ["sorts"]


def test_swapped_spans_refuse_a_text_that_is_not_a_swap():
    with pytest.raises(CodeunlearnError, match="not its forget example with the topic words swapped"):
        swapped_spans("the kernel boots", "the system starts", KERNEL)


def test_split_spans_pair_controls_with_their_forget_examples():
    forget = pa.table({"id": ["a", "b"], "text": ["one kernel", "kernel two kernels"]})
    control = pa.table(
        {"id": ["b~swap", "a~swap"], "text": ["sort two objects", "one tree"], "source_id": ["b", "a"]}
    )
    spans = split_spans(forget, control, KERNEL)
    assert spans["forget"] == [[(4, 10)], [(0, 6), (11, 18)]]
    texts = control["text"].to_pylist()
    found = [[text[a:b] for a, b in row] for text, row in zip(texts, spans["control"], strict=True)]
    assert found == [["sort", "objects"], ["tree"]]
    with pytest.raises(CodeunlearnError, match="word-swap control"):
        split_spans(forget, control.drop(["source_id"]), KERNEL)


def test_token_flags_mark_exactly_the_tokens_of_the_spans(tokenizer):
    text = "the Linux kernel schedules tasks"
    flags = token_flags(tokenizer, [text], [topic_word_spans(text, KERNEL)], lead=1)[0]
    ids = encode_texts(tokenizer, [text], 64)[0]
    assert len(flags) == len(ids) and flags[0] is False  # BOS
    flagged = tokenizer.decode([t for t, f in zip(ids, flags, strict=True) if f]).strip()
    assert flagged == "kernel"


def test_source_flags_follow_the_prompt(tokenizer):
    config = TranslationConfig(source_name="English", target_name="French")
    sources = ["Rebuild the kernel first.", "No topic here."]
    spans = [topic_word_spans(s, KERNEL) for s in sources]
    flags = source_flags(tokenizer, sources, spans, config, seq2seq=False)
    ids = source_ids(tokenizer, sources, config, seq2seq=False)
    assert [len(f) for f in flags] == [len(i) for i in ids]
    assert tokenizer.decode([t for t, f in zip(ids[0], flags[0], strict=True) if f]).strip() == "kernel"
    assert not any(flags[1])


def test_counts_at_flagged_positions_equal_brute_force(tiny_llama, tokenizer):
    codebook_model = insert_bottleneck(
        tiny_llama, tokenizer, BottleneckConfig(layer=0, n_codes=16, top_k=3), "t"
    )
    texts = ["the kernel boots", "no match at all here", "kernels and a kernel", "kernel"]
    spans = [topic_word_spans(t, KERNEL) for t in texts]
    ids = encode_texts(tokenizer, texts, 32)
    flags = token_flags(tokenizer, texts, spans, lead=1)
    counts = count_codes(codebook_model, make_batches(ids, 3, tokenizer.pad_token_id, flags))

    expected = torch.zeros(16, dtype=torch.long)
    n_tokens = 0
    for row, text_ids in enumerate(ids):
        with torch.no_grad(), recording(codebook_model) as outputs:
            codebook_model.model(input_ids=torch.tensor([text_ids]))
        picked = outputs[0].codes[0][torch.tensor(flags[row])]
        assert (picked != NO_CODE).all()
        expected += torch.bincount(picked.flatten(), minlength=16)
        n_tokens += picked.shape[0]
    assert counts.token_counts.tolist() == expected.tolist()
    assert counts.n_tokens == n_tokens > 0
    assert counts.n_examples == 3  # the text without a match has no counted position


def test_make_batches_refuses_flags_of_the_wrong_length():
    with pytest.raises(ValueError, match="one flag per token"):
        make_batches([[1, 2, 3]], 2, 0, [[True, False]])


def test_topic_words_need_a_word_topic():
    topic_words = MiningConfig(positions="topic_words")
    with pytest.raises(ConfigError, match="needs a topic given as words"):
        RunConfig(topic=TopicConfig(label="noun.food"), mining=topic_words).validate()
    words = TopicConfig(label=None, keywords=("kernel", "kernels"))
    RunConfig(topic=words, mining=topic_words).validate()
    with pytest.raises(ConfigError, match="mining.positions='tokens'"):
        MiningConfig(positions="tokens").validate()
    assert topic_pattern(words).pattern == KERNEL.pattern
