"""Per-text code firings in the code store: one forward pass, then any set of texts' counts by query,
equal to counting those texts directly."""

from __future__ import annotations

import numpy as np
import pytest

from codeunlearn.core.config import BottleneckConfig
from codeunlearn.data.batching import encode_texts, make_batches
from codeunlearn.model.surgery import insert_bottleneck
from codeunlearn.store.code_store import CodeStore
from codeunlearn.store.text_codes import add_firings, codebook_key, counted_texts, summed_counts
from codeunlearn.unlearning.mining import count_codes, text_firings


def test_summed_counts_equal_direct_counts(tiny_llama, tokenizer, texts, tmp_path):
    cm = insert_bottleneck(tiny_llama, tokenizer, BottleneckConfig(layer=0, n_codes=32, top_k=2), "t")
    ids = [f"w{i}" for i in range(len(texts))]
    batches = make_batches(encode_texts(tokenizer, texts, 32), 3, tokenizer.pad_token_id)
    store = CodeStore(tmp_path / "store")
    key = codebook_key("ab" * 32, 32)
    add_firings(store, key, ids, text_firings(cm, batches))
    assert counted_texts(store, key) == set(ids)
    assert counted_texts(store, codebook_key("cd" * 32, 32)) == set()  # another codebook sees nothing

    subset = [0, 2, 5]
    direct = count_codes(cm, make_batches(encode_texts(tokenizer, [texts[i] for i in subset], 32), 2, 2))
    queried = summed_counts(store, key, [ids[i] for i in subset], 32)
    np.testing.assert_array_equal(queried.token_counts, direct.token_counts)
    np.testing.assert_array_equal(queried.example_counts, direct.example_counts)
    assert (queried.n_tokens, queried.n_examples) == (direct.n_tokens, direct.n_examples)

    first_two = make_batches(encode_texts(tokenizer, texts[:2], 32), 2, tokenizer.pad_token_id)
    add_firings(store, key, ids[:2], text_firings(cm, first_two))  # stored twice: still counted once
    again = summed_counts(store, key, [ids[i] for i in subset], 32)
    np.testing.assert_array_equal(again.token_counts, direct.token_counts)
    with pytest.raises(KeyError, match="never counted"):
        summed_counts(store, key, ["w0", "missing"], 32)
