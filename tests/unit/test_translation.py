"""Translation setting: prompt-form batches, training a causal LM's codebook on targets, decoding,
parallel corpora, word topics with swapped controls, metrics and the paper's normalisation."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pyarrow as pa
import pytest
import torch

from codeunlearn.core.config import BottleneckConfig, DataConfig, TopicConfig, TrainConfig, TranslationConfig
from codeunlearn.core.errors import ConfigError, MissingAssetError
from codeunlearn.data.corpus import split_train_test
from codeunlearn.data.parallel_corpus import BIBLE_CORPUS, SWORD_DIR, _open_bibles, load_parallel_corpus
from codeunlearn.data.topics import build_splits
from codeunlearn.model.surgery import insert_bottleneck
from codeunlearn.translation.experiment import TranslationReport
from codeunlearn.translation.metrics import TranslationScorer
from codeunlearn.translation.seq2seq import (
    IGNORE,
    source_ids,
    target_ids,
    train_translation,
    translate,
    translation_batches,
)

SOURCES = ["the love of God", "a river of water", "bread and wine", "the king spoke"]
TARGETS = ["el amor de Dios", "un río de agua", "pan y vino", "el rey habló"]


def test_prompt_form_takes_loss_on_the_target_only(tokenizer):
    config = TranslationConfig()
    batches = translation_batches(tokenizer, SOURCES, TARGETS, config, seq2seq=False, batch_size=4)
    (batch,) = batches
    src = source_ids(tokenizer, SOURCES, config, False)
    tgt = target_ids(tokenizer, TARGETS, config, False)
    for i, row in enumerate(batch.rows.tolist()):
        labels = batch.labels[i][batch.labels[i] != IGNORE].tolist()
        assert labels == tgt[row]  # exactly the target tokens (and EOS) carry loss
        n = len(src[row])
        assert batch.input_ids[i, :n].tolist() == src[row]  # prompt first, BOS at position 0
        assert src[row][0] == tokenizer.bos_token_id
        assert (batch.labels[i, :n] == IGNORE).all()
    assert "Spanish:" in tokenizer.decode(src[0])


def test_causal_codebook_learns_to_translate_and_decodes_consistently(tiny_llama, tokenizer):
    codebook_model = insert_bottleneck(
        tiny_llama, tokenizer, BottleneckConfig(layer=0, n_codes=32, top_k=4), "t"
    )
    config = TranslationConfig(max_new_tokens=5)
    batches = translation_batches(tokenizer, SOURCES, TARGETS, config, seq2seq=False, batch_size=4)
    frozen_below = tiny_llama.model.layers[0].mlp.up_proj.weight.clone()

    def loss() -> float:
        with torch.no_grad():
            b = batches[0]
            return tiny_llama(
                input_ids=b.input_ids, attention_mask=b.attention_mask, labels=b.labels
            ).loss.item()

    before = loss()
    train = TrainConfig(mode="above", epochs=25, lr=3e-3, base_lr=2e-2, init_vectors=64, reseed_every=5)
    result = train_translation(codebook_model, batches, train)
    assert result.steps == 25 and loss() < before - 0.5
    assert torch.equal(frozen_below, tiny_llama.model.layers[0].mlp.up_proj.weight)
    together = translate(tiny_llama, tokenizer, SOURCES, config, batch_size=4)
    alone = [translate(tiny_llama, tokenizer, [s], config, batch_size=1)[0] for s in SOURCES]
    assert together == alone  # grouping prompts by length never changes a translation


def test_parallel_file_goes_through_the_corpus_path(tmp_path):
    path = tmp_path / "pairs.jsonl"
    rows = [{"en": s, "es": t, "id": f"r{i}"} for i, (s, t) in enumerate(zip(SOURCES, TARGETS, strict=True))]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    data = DataConfig(corpus=str(path), text_column="en", label_column=None)
    table = load_parallel_corpus(data, TranslationConfig(target_column="es"))
    assert table.column_names[:4] == ["id", "text", "target", "label"]
    assert table["text"].to_pylist() == SOURCES and table["target"].to_pylist() == TARGETS
    with pytest.raises(ConfigError, match="no target column 'fr'.*translation.target_column"):
        load_parallel_corpus(data, TranslationConfig(target_column="fr"))


def test_cli_refuses_a_monolingual_corpus_with_the_fix(tmp_path):
    from typer.testing import CliRunner

    from codeunlearn.cli.main import app

    config = Path(__file__).parents[2] / "configs" / "translation.yaml"
    args = ["translate-eval", "-c", str(config), f"run_dir={tmp_path}", "data.corpus=wordnet"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2
    assert "not a parallel corpus: set data.corpus to 'bible-en-es'" in result.output


def test_missing_bible_modules_name_the_install_command(tmp_path):
    with pytest.raises(MissingAssetError, match="apt-get install sword-text-kjv sword-text-sparv"):
        _open_bibles(tmp_path)


def test_word_topic_keeps_targets_and_swaps_topic_words_in_controls():
    sources = [
        f"verse {i} {'love of the people' if i % 3 == 0 else 'water of the river'}" for i in range(300)
    ]
    corpus = pa.table(
        {
            "id": [f"v{i}" for i in range(300)],
            "text": sources,
            "target": [f"es {i}" for i in range(300)],
            "label": ["book"] * 300,
        }
    )
    train_rows, test_rows = split_train_test(corpus, 0.2)
    splits = build_splits(train_rows, test_rows, TopicConfig(label=None, keywords=("love",)), seed=0)
    assert splits.manifest["control_method"] == "word_swap"
    assert all("love" in t for t in splits.forget_test["text"].to_pylist())
    assert "target" in splits.forget_test.column_names and "target" in splits.retain_test.column_names
    assert not any("love" in t for t in splits.control_train["text"].to_pylist())
    assert splits.control_train.num_rows == splits.forget_train.num_rows


def test_metrics_rank_translations():
    scorer = TranslationScorer(("bleu", "chrf", "meteor", "bertscore"), wordnet_dir=None)
    references = ["the cat sat on the mat", "a big dog barked loudly"]
    exact = scorer.score(references, references)
    close = scorer.score(["the cat sat on a mat", "a large dog barked"], references)
    unrelated = scorer.score(["stock prices fell", "rain tomorrow"], references)
    for metric in ("bleu", "chrf", "meteor", "bertscore"):
        assert exact[metric] > close[metric] > unrelated[metric], metric
    assert exact["bleu"] == pytest.approx(100) and exact["bertscore"] == pytest.approx(100, abs=1e-3)


def test_term_metric_counts_translations_that_keep_the_topic_word():
    scorer = TranslationScorer(("term",), target_keywords=("noyau", "noyaux"))
    references = ["le noyau Linux", "les noyaux récents", "un paquet", "Noyau et modules"]
    hypotheses = ["le Noyau", "les modules", "le noyau", "un système"]
    # 3 references hold the word (whole words, any case); of their translations only the first keeps it
    assert scorer.score(hypotheses, references)["term"] == pytest.approx(100 / 3)
    assert math.isnan(scorer.score(["x"], ["un paquet"])["term"])
    with pytest.raises(ConfigError, match="target_keywords is empty"):
        TranslationConfig(metrics=("term",)).validate()


def test_whole_targets_drop_the_pairs_whose_target_would_be_cut(tokenizer):
    from codeunlearn.core.config import RunConfig
    from codeunlearn.translation.experiment import _whole_targets

    corpus = pa.table({"id": ["a", "b"], "text": ["short", "long"], "target": ["corto", "largo " * 40]})
    config = RunConfig(translation=TranslationConfig(max_target_tokens=16, whole_targets=True))
    kept = _whole_targets(corpus, config)
    assert kept["id"].to_pylist() == ["a"]
    ids = target_ids(tokenizer, kept["target"].to_pylist(), config.translation, seq2seq=False)
    assert ids[0][-1] == tokenizer.eos_token_id and len(ids[0]) <= 16


def test_normalised_score_is_zero_at_base_and_one_at_codebook():
    def scores(value: float) -> dict:
        return {"topic": {"bleu": value}, "rest": {"bleu": value}}

    report = TranslationReport(
        scores={"base": scores(10.0), "codebook": scores(30.0), "masked@8": scores(20.0)}
    )
    assert report.normalized("base", "topic", "bleu") == pytest.approx(0)
    assert report.normalized("codebook", "topic", "bleu") == pytest.approx(1)
    assert report.normalized("masked@8", "topic", "bleu") == pytest.approx(0.5)
    assert report.relative("masked@8", "rest", "bleu") == pytest.approx(-1 / 3)
    assert "masked@8 | 0.50 (-33%)" in report.to_markdown()


@pytest.mark.slow
@pytest.mark.skipif(not (SWORD_DIR / "mods.d").is_dir(), reason="sword-text-kjv/-sparv not installed")
def test_bible_pairs_are_verse_aligned():
    table = load_parallel_corpus(DataConfig(corpus=BIBLE_CORPUS), TranslationConfig())
    assert table.num_rows > 30000
    john = table.filter(pa.compute.equal(table["id"], "John.3.16")).to_pylist()[0]
    assert "loved the world" in john["text"] and "amó Dios al mundo" in john["target"]


def test_translation_yaml_loads():
    from codeunlearn.core.config import load_config

    config = load_config(Path(__file__).parents[2] / "configs" / "translation.yaml")
    assert config.data.corpus == BIBLE_CORPUS and config.topic.kind == "keywords"
    with pytest.raises(ConfigError, match="translation.metrics"):
        load_config(None, ["translation.metrics=[bleu,rouge]"])


def test_translate_eval_end_to_end_on_a_tiny_local_t5(tokenizer, tmp_path):
    """The whole experiment on a T5 at the paper's site: a local model directory, a local parallel
    file, a word topic; every variant is scored on both splits and the table is written."""
    from codeunlearn.core.config import load_config
    from codeunlearn.translation.experiment import run_translation

    from .test_surgery_t5 import make_t5

    model_dir = tmp_path / "tiny-t5"
    make_t5(len(tokenizer), tokenizer.pad_token_id, tokenizer.eos_token_id).save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    words = ["water", "bread", "river", "king", "stone", "field"]
    rows = [
        {"id": f"v{i}", "en": f"the {'love' if i % 3 == 0 else words[i % 6]} of {words[(i + 1) % 6]}",
         "es": f"el {'amor' if i % 3 == 0 else 'agua'} {i}"}
        for i in range(240)
    ]  # fmt: skip
    (tmp_path / "pairs.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    config = load_config(
        Path(__file__).parents[2] / "configs" / "translation.yaml",
        [
            f"run_dir={tmp_path / 'run'}",
            f"model.name={model_dir}",
            f"data.corpus={tmp_path / 'pairs.jsonl'}",
            "data.text_column=en",
            "data.label_column=null",
            "translation.target_column=es",
            "topic.keywords=[love]",
            "bottleneck.layer=0",
            "bottleneck.n_codes=64",
            "bottleneck.skip_first_token=false",
            "train.max_examples=64",
            "train.init_vectors=256",
            "mining.min_count=1",
            "mining.n_select=4",
            "eval.sweep=[2]",
            "translation.max_new_tokens=3",
            "translation.max_eval_examples=6",
            "translation.metrics=[bleu,chrf,meteor,term]",
            "translation.target_keywords=[amor]",
        ],
    )
    assert config.mining.positions == "topic_words"  # the shipped config counts at the swapped words
    report = run_translation(config)
    assert set(report.scores) == {"base", "codebook", "masked@2", "random@2", "masked@4", "random@4"}
    for variant, scores in report.scores.items():
        assert set(scores) == {"topic", "rest"} and set(scores["topic"]) == {"bleu", "chrf", "meteor", "term"}
        assert [len(report.translations[variant][s]) for s in ("topic", "rest")] == [6, 6]
    assert report.n_examples == {"topic": 6, "rest": 6}
    assert math.isnan(report.scores["base"]["rest"]["term"])  # no rest reference says "amor"
    stored = json.loads((tmp_path / "run" / "eval" / "translation.json").read_text())
    assert stored["scores"]["base"]["rest"]["term"] is None  # strict JSON: NaN is written as null
    table = (tmp_path / "run" / "eval" / "translation.md").read_text()
    assert "| masked@4 |" in table and "0 = base, 1 = codebook" in table
    assert (tmp_path / "run" / "model" / "codebook_config.json").is_file()


def test_teacher_forced_nll_equals_a_per_example_count(tiny_llama, tokenizer):
    from codeunlearn.translation.metrics import keyword_pattern
    from codeunlearn.translation.seq2seq import teacher_forced_nll

    config = TranslationConfig(max_target_tokens=16)
    amor = keyword_pattern(["amor"])
    scores = teacher_forced_nll(
        tiny_llama, tokenizer, SOURCES, TARGETS, config, batch_size=3, term_pattern=amor
    )

    total, count, term_total, term_count = 0.0, 0, 0.0, 0
    for source, target in zip(SOURCES, TARGETS, strict=True):  # one at a time: no padding at all
        src = source_ids(tokenizer, [source], config, seq2seq=False)[0]
        tgt = target_ids(tokenizer, [target], config, seq2seq=False)[0]
        with torch.no_grad():
            logits = tiny_llama(input_ids=torch.tensor([src + tgt])).logits[0]
        word = (" " + target).find("amor")
        for offset, token in enumerate(tgt):
            nll = float(torch.nn.functional.cross_entropy(logits[len(src) - 1 + offset], torch.tensor(token)))
            total, count = total + nll, count + 1
            # the characters this token adds to the decoded target overlap the word "amor"
            start, end = len(tokenizer.decode(tgt[:offset])), len(tokenizer.decode(tgt[: offset + 1]))
            if word >= 0 and start < word + 4 and word < end and token != tokenizer.eos_token_id:
                term_total, term_count = term_total + nll, term_count + 1
    assert term_count > 0
    assert scores["nll"] == pytest.approx(total / count, rel=1e-4)
    assert scores["term_nll"] == pytest.approx(term_total / term_count, rel=1e-4)
    assert math.isnan(
        teacher_forced_nll(tiny_llama, tokenizer, SOURCES[1:], TARGETS[1:], config, 3, amor)["term_nll"]
    )


def test_a_translation_codebook_is_reused_across_scoring_settings():
    from dataclasses import replace

    from codeunlearn.core.config import RunConfig
    from codeunlearn.training.stamp import same_training
    from codeunlearn.translation.experiment import _stamp

    config = RunConfig(translation=TranslationConfig())
    stored = _stamp(config)
    older = stored | {"translation": {k: v for k, v in stored["translation"].items() if k != "whole_targets"}}

    def matches(translation: TranslationConfig, stamp: dict = stored) -> bool:
        return same_training(stamp, _stamp(replace(config, translation=translation)))

    scoring = replace(config.translation, target_keywords=("amor",), max_new_tokens=8, max_eval_examples=5)
    assert matches(scoring)  # decoding and scoring settings do not change the trained model
    assert matches(config.translation, older)  # stamped before whole_targets existed
    assert not matches(replace(config.translation, whole_targets=True), older)
    assert not matches(replace(config.translation, max_target_tokens=32))
