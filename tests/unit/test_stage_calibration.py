"""The mine stage calibrates the config's topic beside the active mask, less the topic's own source."""

from __future__ import annotations

from codeunlearn.pipeline.stages import _active_besides
from codeunlearn.unlearning.masks import mask_from_codes


def test_a_rerun_calibrates_without_its_own_active_codes():
    active = mask_from_codes(16, "noun.food", [1, 2, 3]).union(mask_from_codes(16, "noun.animal", [3, 4]))
    # the rerun's mask replaces noun.food's source, so only the other topics' codes stand beside it
    assert _active_besides(active, "noun.food").code_ids == (3, 4)
    assert _active_besides(active, "noun.plant") is active
    assert _active_besides(None, "noun.food") is None
