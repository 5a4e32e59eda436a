"""WordNet parsing against the real Debian WordNet 3.0 files, plus small synthetic data files."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from codeunlearn.core.errors import ConfigError, MissingAssetError
from codeunlearn.data.wordnet import LEXNAMES, SCHEMA, find_wordnet_dir, read_wordnet

WORDNET_DIR = Path("/usr/share/wordnet")
needs_wordnet = pytest.mark.skipif(
    not (WORDNET_DIR / "data.noun").is_file(),
    reason="WordNet 3.0 is not installed at /usr/share/wordnet (apt-get install wordnet-base)",
)

BREAD_OFFSET = 7679356  # `grep ' bread 0 ' /usr/share/wordnet/data.noun`


@pytest.fixture(scope="module")
def nouns() -> pa.Table:
    if not (WORDNET_DIR / "data.noun").is_file():
        pytest.skip("WordNet 3.0 is not installed at /usr/share/wordnet (apt-get install wordnet-base)")
    return read_wordnet(WORDNET_DIR)


def _row(table: pa.Table, synset_id: str) -> dict:
    rows = table.filter(pc.equal(table.column("id"), synset_id)).to_pylist()
    assert len(rows) == 1, f"{synset_id} appears {len(rows)} times"
    return rows[0]


def test_lexnames_follow_the_official_table() -> None:
    assert len(LEXNAMES) == 45
    assert len(set(LEXNAMES)) == 45
    assert LEXNAMES[:5] == ("adj.all", "adj.pert", "adv.all", "noun.Tops", "noun.act")
    assert (LEXNAMES[13], LEXNAMES[18], LEXNAMES[28]) == ("noun.food", "noun.person", "noun.time")
    assert (LEXNAMES[29], LEXNAMES[43], LEXNAMES[44]) == ("verb.body", "verb.weather", "adj.ppl")
    assert all(name.split(".")[0] in ("adj", "adv", "noun", "verb") for name in LEXNAMES)
    assert sum(name.startswith("noun.") for name in LEXNAMES) == 26
    assert sum(name.startswith("verb.") for name in LEXNAMES) == 15


@needs_wordnet
def test_reads_every_noun_synset(nouns: pa.Table) -> None:
    assert nouns.schema == SCHEMA
    assert nouns.num_rows == 82115
    assert pc.count_distinct(nouns.column("id")).as_py() == 82115
    assert set(nouns.column("pos").to_pylist()) == {"noun"}
    assert set(nouns.column("lexname").to_pylist()) == {n for n in LEXNAMES if n.startswith("noun.")}
    assert nouns.column("label").equals(nouns.column("lexname"))
    assert pc.min(pc.utf8_length(nouns.column("gloss"))).as_py() > 0


@needs_wordnet
def test_bread_is_food_with_its_definition(nouns: pa.Table) -> None:
    bread = _row(nouns, f"n{BREAD_OFFSET:08d}")
    assert bread["offset"] == BREAD_OFFSET
    assert bread["lexname"] == "noun.food" and bread["label"] == "noun.food"
    assert bread["lemmas"] == ["bread", "breadstuff", "staff of life"]  # underscores become spaces
    definition = (
        "food made from dough of flour or meal and usually raised with yeast or baking powder and then baked"
    )
    assert bread["gloss"] == definition
    assert bread["text"] == f"bread: {definition}"


@needs_wordnet
def test_examples_are_dropped_unless_asked_for(nouns: pa.Table) -> None:
    congener = _row(nouns, "n00003993")
    assert congener["gloss"] == "a whole (a thing or person) of the same kind or category as another"
    assert not pc.any(pc.match_substring(nouns.column("gloss"), '; "')).as_py()
    with_examples = _row(read_wordnet(WORDNET_DIR, include_examples=True), "n00003993")
    assert with_examples["gloss"].startswith(congener["gloss"] + '; "lard was also used')
    assert with_examples["text"] == f"congener: {with_examples['gloss']}"


@needs_wordnet
def test_all_parts_of_speech_and_adjective_markers() -> None:
    table = read_wordnet(WORDNET_DIR, pos=("noun", "verb", "adj", "adv"))
    counts = dict(zip(*pc.value_counts(table.column("pos")).flatten(), strict=True))
    assert {k.as_py(): v.as_py() for k, v in counts.items()} == {
        "noun": 82115,
        "verb": 13767,
        "adj": 18156,
        "adv": 3621,
    }
    assert pc.count_distinct(table.column("id")).as_py() == table.num_rows
    outback = _row(table, "a00020103")  # data.adj spells the first lemma `outback(a)`
    assert outback["lemmas"] == ["outback", "remote"]
    assert outback["lexname"] == "adj.all"
    assert outback["text"] == "outback: inaccessible and sparsely populated"
    pairs = {tuple(p) for p in zip(*(table.column(c).to_pylist() for c in ("lexname", "pos")), strict=True)}
    assert all(lexname.split(".")[0] == pos for lexname, pos in pairs)


def test_parses_a_synthetic_data_file(tmp_path: Path) -> None:
    (tmp_path / "data.noun").write_text(
        "  1 This software and database is being provided to you  \n"
        "  2 the LICENSEE, by Princeton University  \n"
        "00001740 13 n 02 hot_dog 0 frank(a) 1 001 @ 00002000 n 0000 "
        '| a sausage in a bun; "he ate a hot dog"  \n'
        "00002000 05 n 0a a 0 b 0 c 0 d 0 e 0 f 0 g 0 h 0 i 0 j 0 000 | ten lemmas (hex count)  \n"
    )
    table = read_wordnet(tmp_path)
    assert table.column("id").to_pylist() == ["n00001740", "n00002000"]
    first = table.to_pylist()[0]
    assert first["lemmas"] == ["hot dog", "frank"]
    assert first["gloss"] == "a sausage in a bun"
    assert first["text"] == "hot dog: a sausage in a bun"
    assert first["lexname"] == "noun.food"
    assert len(table.to_pylist()[1]["lemmas"]) == 10
    assert read_wordnet(tmp_path, include_examples=True).to_pylist()[0]["gloss"] == (
        'a sausage in a bun; "he ate a hot dog"'
    )


def test_missing_wordnet_names_the_path_and_the_fix(tmp_path: Path) -> None:
    with pytest.raises(MissingAssetError, match="no data.noun") as error:
        find_wordnet_dir(tmp_path)
    assert str(tmp_path) in str(error.value)
    assert "apt-get install --no-install-recommends wordnet-base" in str(error.value)
    assert "data.wordnet_dir" in str(error.value)


def test_missing_pos_file_is_reported(tmp_path: Path) -> None:
    (tmp_path / "data.noun").write_text("")
    with pytest.raises(MissingAssetError, match="data.verb"):
        read_wordnet(tmp_path, pos=("verb",))


def test_unknown_pos_lists_the_valid_ones(tmp_path: Path) -> None:
    (tmp_path / "data.noun").write_text("")
    with pytest.raises(ConfigError, match="noun, verb, adj, adv") as error:
        read_wordnet(tmp_path, pos=("nouns",))
    assert "'nouns'" in str(error.value)
