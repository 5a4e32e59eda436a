"""The general-text probe: passages read and sampled deterministically, cut to length, scored on every
token after BOS; a missing Debian Reference skips it with the install command."""

from __future__ import annotations

import math

import pytest

from codeunlearn.core.config import GeneralTextConfig
from codeunlearn.core.errors import CodeunlearnError, ConfigError
from codeunlearn.data.parallel_corpus import DEBIAN_REFERENCE_DIR
from codeunlearn.evaluation.general_text import (
    DEBIAN_REFERENCE_INSTALL,
    GeneralTextResult,
    file_paragraphs,
    general_passages_or_skip,
    general_text_set,
    reference_paragraphs,
    sample_passages,
)

PARAGRAPHS = [f"paragraph {i} " + "word " * (i % 7) * 10 for i in range(40)]


def test_sample_is_seeded_long_enough_distinct_and_in_source_order():
    config = GeneralTextConfig(passages=5, min_chars=100, seed=1)
    sample = sample_passages(PARAGRAPHS + PARAGRAPHS, config)

    assert sample == sample_passages(PARAGRAPHS + PARAGRAPHS, config)
    assert len(sample) == len(set(sample)) == 5
    assert all(len(p) >= 100 for p in sample)
    assert sample == sorted(sample, key=PARAGRAPHS.index)
    assert sample != sample_passages(PARAGRAPHS, GeneralTextConfig(passages=5, min_chars=100, seed=2))
    long_ones = [p for p in PARAGRAPHS if len(p) >= 100]
    assert sample_passages(PARAGRAPHS, GeneralTextConfig(passages=1000, min_chars=100)) == long_ones
    with pytest.raises(CodeunlearnError, match="min_chars"):
        sample_passages(["short"], GeneralTextConfig(min_chars=100))


def test_a_text_file_is_split_at_blank_lines(tmp_path):
    path = tmp_path / "general.txt"
    path.write_text("First passage,\nwrapped.\n\n\nSecond   one.\n  \nThird.\n")
    assert file_paragraphs(path) == ["First passage, wrapped.", "Second one.", "Third."]
    passages, skipped = general_passages_or_skip(GeneralTextConfig(source=str(path), min_chars=10))
    assert passages == ["First passage, wrapped.", "Second one."] and skipped is None


def test_a_missing_debian_reference_skips_with_the_install_command(tmp_path):
    passages, skipped = general_passages_or_skip(GeneralTextConfig(), reference_dir=tmp_path)
    assert passages == []
    assert DEBIAN_REFERENCE_INSTALL in skipped and "--no-general-text" in skipped
    result = GeneralTextResult("debian-reference", 0, 0, skipped=skipped)
    assert (
        result.to_markdown().startswith("General text: skipped (") and result.to_json()["skipped"] == skipped
    )


def test_a_missing_named_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="nowhere.txt"):
        GeneralTextConfig(source=str(tmp_path / "nowhere.txt")).validate()
    with pytest.raises(ConfigError, match="max_length=1"):
        GeneralTextConfig(max_length=1).validate()


@pytest.mark.skipif(
    not any(DEBIAN_REFERENCE_DIR.glob("*.en.html")), reason="debian-reference-en is not installed"
)
def test_the_installed_debian_reference_gives_prose():
    paragraphs = reference_paragraphs()
    sample = sample_passages(paragraphs, GeneralTextConfig(passages=100))
    assert len(sample) == 100 and all(len(p) >= 200 for p in sample)
    assert not any(p.startswith("$ ") for p in sample)  # shell sessions are <pre> blocks, left out


def test_passages_are_cut_to_length_and_scored_after_bos(tokenizer):
    passages = ["A long passage of ordinary English prose. " * 20, "Short prose here."]
    eval_set = general_text_set(passages, tokenizer, GeneralTextConfig(max_length=16, batch_size=2))

    (batch,) = eval_set.batches
    assert batch.input_ids.shape[1] == 16 and (batch.input_ids[:, 0] == tokenizer.bos_token_id).all()
    assert eval_set.groups == ["general", "general"] and eval_set.score_from is None


def test_markdown_shows_each_variant_against_the_codebook_model():
    result = GeneralTextResult("debian-reference", 3, 120, {"base": 3.0, "codebook": 3.5, "masked": 3.25})
    table = result.to_markdown()
    assert "| masked | 3.2500 | 25.8 | -0.2500 |" in table
    assert "| base | 3.0000 | 20.1 | -0.5000 |" in table
    assert math.isclose(result.to_json()["nll"]["codebook"], 3.5)
