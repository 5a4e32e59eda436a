"""Progress reporting: log lines when output is not a terminal, and truncated texts counted."""

from __future__ import annotations

import logging

import pytest

from codeunlearn.core.progress import progress, progress_mode
from codeunlearn.data.batching import encode_texts


class _Tokenizer:
    bos_token_id = 1
    eos_token_id = 2

    def __call__(self, texts, add_special_tokens=False):
        return {"input_ids": [[3] * len(text.split()) for text in texts]}


@pytest.mark.parametrize(("value", "mode"), [("1", "bar"), ("bar", "bar"), ("log", "log"), ("0", "off")])
def test_the_environment_picks_the_form(monkeypatch, value, mode):
    monkeypatch.setenv("CODEUNLEARN_PROGRESS", value)
    assert progress_mode() == mode


def test_output_to_a_file_gets_log_lines_with_count_and_time_left(monkeypatch, caplog):
    monkeypatch.delenv("CODEUNLEARN_PROGRESS", raising=False)  # stderr is captured: not a terminal
    assert progress_mode() == "log"
    with caplog.at_level(logging.INFO, logger="codeunlearn.progress"):
        assert list(progress(range(5), desc="counting")) == [0, 1, 2, 3, 4]
    lines = [r.getMessage() for r in caplog.records if r.name == "codeunlearn.progress"]
    assert lines[0].startswith("counting:") and "0/5" in lines[0]
    assert "5/5" in lines[-1] and "<" in lines[-1]  # elapsed<left, as tqdm writes it


def test_off_reports_nothing(monkeypatch, caplog):
    monkeypatch.setenv("CODEUNLEARN_PROGRESS", "0")
    with caplog.at_level(logging.INFO, logger="codeunlearn.progress"):
        list(progress(range(3)))
    assert not [r for r in caplog.records if r.name == "codeunlearn.progress"]


def test_texts_cut_by_max_length_are_counted(caplog):
    texts = ["a b c", "a b c d e f", "a"]  # 4, 7 and 2 tokens with BOS
    with caplog.at_level(logging.INFO, logger="codeunlearn.data.batching"):
        ids = encode_texts(_Tokenizer(), texts, max_length=4)
    assert [len(i) for i in ids] == [4, 4, 2]
    assert any("1 of 3 texts" in r.getMessage() for r in caplog.records)


def test_a_new_postfix_waits_for_the_next_timed_line(monkeypatch, caplog):
    monkeypatch.setenv("CODEUNLEARN_PROGRESS", "log")
    with caplog.at_level(logging.INFO, logger="codeunlearn.progress"):
        bar = progress(total=100, desc="training")
        for step in range(100):
            bar.update(1)
            bar.set_postfix(loss=f"{step:.3f}")
        bar.close()
    lines = [r.getMessage() for r in caplog.records if r.name == "codeunlearn.progress"]
    assert len(lines) <= 3  # start and end (the minute never passes here), not one per postfix
    assert "100/100" in lines[-1] and "loss=99.000" in lines[-1]
