"""Masks compose by union, come apart by source, and round-trip through JSON."""

from __future__ import annotations

import pytest

from codeunlearn.core.errors import CodeunlearnError
from codeunlearn.unlearning.masks import Mask, load_mask, mask_from_codes, save_mask


def test_union_and_removal():
    a = mask_from_codes(100, "A", [1, 2, 3])
    b = mask_from_codes(100, "B", [3, 4])
    both = a.union(b)
    assert both.code_ids == (1, 2, 3, 4)
    assert both.without("A").code_ids == (3, 4)  # code 3 stays: B chose it too
    assert both.without("A").digest == b.digest
    assert both.without("B").without("A").code_ids == ()


def test_union_refuses_other_codebooks_and_unknown_sources():
    with pytest.raises(CodeunlearnError, match="different codebooks"):
        mask_from_codes(100, "A", [1]).union(mask_from_codes(50, "B", [1]))
    with pytest.raises(CodeunlearnError, match="no source named 'C'"):
        mask_from_codes(100, "A", [1]).without("C")
    with pytest.raises(CodeunlearnError, match=r"\[0, 10\)"):
        mask_from_codes(10, "A", [10])


def test_json_round_trip_and_digest_check(tmp_path):
    mask = mask_from_codes(64, "noun.food", [9, 3], rule="enrichment", data_hash="abc")
    save_mask(mask, tmp_path / "m.json")
    assert load_mask(tmp_path / "m.json") == mask
    text = (tmp_path / "m.json").read_text().replace('"code_ids": [\n    3,', '"code_ids": [\n    4,', 1)
    (tmp_path / "m.json").write_text(text.replace('"n_codes": 64', '"n_codes": 65'))
    with pytest.raises(CodeunlearnError, match="digest"):
        load_mask(tmp_path / "m.json")
    assert Mask(64).code_ids == ()
