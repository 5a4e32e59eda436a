"""The mask recipe: counts per split, the selected codes as the mask, the ranking, and replacement of a
source by name."""

from __future__ import annotations

import numpy as np

from codeunlearn.core.config import BottleneckConfig, MiningConfig
from codeunlearn.data.batching import encode_texts, make_batches
from codeunlearn.model.surgery import insert_bottleneck
from codeunlearn.unlearning.masks import mask_from_codes
from codeunlearn.unlearning.mining import count_codes
from codeunlearn.unlearning.recipe import TopicBatches, mine_mask, rank_eligible, with_source
from codeunlearn.unlearning.selection import CodeCounts, select_codes

# Loose thresholds: a handful of texts on a tiny random model still has eligible codes.
MINING = MiningConfig(n_select=3, min_count=1, max_p_value=1.0, min_enrichment=0.0)


def _batches(tokenizer, texts):
    return make_batches(encode_texts(tokenizer, texts, 32), 3, tokenizer.pad_token_id)


def test_mine_mask_masks_the_selected_codes_and_records_its_evidence(tiny_llama, tokenizer, texts):
    codebook_model = insert_bottleneck(
        tiny_llama, tokenizer, BottleneckConfig(layer=0, n_codes=16, top_k=3), "t"
    )
    batches = TopicBatches(
        _batches(tokenizer, texts[:3]), _batches(tokenizer, texts[3:6]), _batches(tokenizer, texts[6:])
    )
    seen = []
    mined = mine_mask(
        codebook_model, "food", batches, MINING, on_counts=lambda split, c: seen.append(split), data_hash="h"
    )
    assert seen == ["forget", "control", "retain"]  # retain is counted when given, never selected on
    forget = count_codes(codebook_model, batches.forget)
    control = count_codes(codebook_model, batches.control)
    assert mined.counts["forget"].token_counts.tolist() == forget.token_counts.tolist()
    expected = select_codes(forget, control, MINING)
    assert mined.mask.code_ids == tuple(sorted(expected.code_ids.tolist()))
    assert len(mined.mask.code_ids) == 3
    assert set(mined.ranked[:3]) == set(mined.mask.code_ids)  # the best-ranked codes are the chosen ones
    assert mined.ranked == rank_eligible(forget, control, MINING)
    assert mined.detector is None  # detector_recall is 0
    source = mined.mask.sources[0]
    assert source.name == "food" and source.data_hash == "h" and source.rule == MINING.rule


def test_ranking_is_best_first_with_ties_by_lower_id():
    forget = CodeCounts(np.array([5, 9, 9, 0]), np.array([5, 9, 9, 0]), 23, 23)
    control = CodeCounts(np.array([5, 1, 1, 5]), np.array([5, 1, 1, 5]), 12, 12)
    assert rank_eligible(forget, control, MINING)[:2] == [1, 2]


def test_with_source_replaces_a_source_of_the_same_name():
    active = mask_from_codes(16, "food", [1, 2]).union(mask_from_codes(16, "animal", [3]))
    updated = with_source(active, mask_from_codes(16, "food", [4]))
    assert {s.name: s.code_ids for s in updated.sources} == {"animal": (3,), "food": (4,)}
    assert updated.code_ids == (3, 4)
