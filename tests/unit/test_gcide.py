"""The GCIDE corpus: Webster's 1913 senses read into rows labelled by their field label."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from codeunlearn.core.config import DataConfig
from codeunlearn.core.data_config import GCIDE_PATH
from codeunlearn.core.errors import MissingAssetError
from codeunlearn.core.fingerprint import data_fingerprint
from codeunlearn.data.corpus import load_corpus
from codeunlearn.data.gcide import iter_senses, read_gcide

# Entries as the dictd database holds them, cut from gcide.dict.dz (the last two made up to cover
# a spelt label, a compound label and a sense edited from WordNet).
ENTRIES = """
00-database-short
   The Collaborative International Dictionary of English v.0.48

aardvark \\aard"vark`\\ ([aum]rd"v[aum]rk`), n. [D., earth-pig.]
   (Zool.)
   An edentate mammal, of the genus {Orycteropus} ({Orycteropus
   afer}), somewhat resembling a pig, common in some parts of
   Southern Africa.

   Syn: Syn. --ant bear, anteater, {Orycteropus afer}, oryctere,
        orycterope
        [1913 Webster WordNet 1.5]

au \\a.u.\\ n.
   1. (Astron.) the unit of length equal to the mean distance of
      the Earth from the sun.
      [WordNet 1.5]

Aaron's rod \\Aar"on's rod`\\ ([^a]r"[u^]nz r[o^]d`). [See Exodus
   vii. 9 and Numbers xvii. 8]
   1. (Arch.) A rod with one serpent twined around it, thus
      differing from the caduceus of Mercury, which has two.
      [1913 Webster]

   2. (Bot.) A plant with a tall flowering stem; esp. the great
      mullein, or hag-taper, and the golden-rod.
      [1913 Webster]

Aback \\A*back"\\ ([.a]*b[a^]k"), adv. [Pref. a- + back; AS. on
   b[ae]c at, on, or toward the back. See {Back}.]
   1. Toward the back or rear; backward. "Therewith aback she
      started." --Chaucer.
      [1913 Webster]

   3. (Naut.) Backward against the mast; -- said of the sails
      when pressed by the wind. --Totten.
      [1913 Webster]

   {To be taken aback}.
      (a) To be driven backward against the mast.
          [1913 Webster]

Abactor \\Ab*ac"tor\\ (-t[~e]r), n. [L., fr. abigere to drive
   away; ab + agere to drive.] (Law)
   One who steals and drives away cattle or beasts by herds or
   droves. [Obs.]
   [1913 Webster]

   Note: A term of the old law books, not of the new.
         [1913 Webster]

Acrodont \\Ac"ro*dont\\, n. (Zo["o]l.)
   One of a group of lizards having the teeth immovably united
   to the top of the alveolar ridge.
   [1913 Webster]

Acromion \\A*cro"mi*on\\, n. (Anat. & Zool.)
   The outer extremity of the spine of the scapula.
   [1913 Webster]

Abattoir \\A`bat`toir"\\, n. (Com.)
   A public slaughterhouse for cattle and sheep.
   [1913 Webster + WordNet 1.5]
"""


def test_labelled_1913_senses_become_headword_and_definition() -> None:
    senses = [(sense.label, f"{sense.headword}: {sense.definition}") for sense in iter_senses(ENTRIES)]
    assert senses == [
        (
            "Arch.",
            "Aaron's rod: A rod with one serpent twined around it, thus differing from the caduceus "
            "of Mercury, which has two.",
        ),
        (
            "Bot.",
            "Aaron's rod: A plant with a tall flowering stem; esp. the great mullein, or hag-taper, "
            "and the golden-rod.",
        ),
        ("Naut.", "Aback: Backward against the mast; -- said of the sails when pressed by the wind."),
        ("Law", "Abactor: One who steals and drives away cattle or beasts by herds or droves."),
        (
            "Zool.",
            "Acrodont: One of a group of lizards having the teeth immovably united to the top of "
            "the alveolar ridge.",
        ),
    ]


def test_read_gcide_numbers_each_label_and_drops_texts_under_two(tmp_path: Path) -> None:
    repeated = (
        "Anchor \\An"
        "chor\\, n. (Naut.)\n   A heavy iron instrument that holds a ship.\n   [1913 Webster]\n\n"
        "Anchor \\An"
        "chor\\, n. (Arch.)\n   A heavy iron instrument that holds a ship.\n   [1913 Webster]\n"
    )
    source = tmp_path / "gcide.dict.dz"
    with gzip.open(source, "wt", encoding="utf-8") as handle:
        handle.write(ENTRIES + "\n" + repeated)
    table = read_gcide(source)
    assert table.column("label").to_pylist() == ["Arch.", "Bot.", "Naut.", "Law", "Zool."]
    ids = table.column("id").to_pylist()
    assert [row_id.rsplit("-", 1)[0] for row_id in ids] == ["Arch.", "Bot.", "Naut.", "Law", "Zool."]
    assert ids == read_gcide(source).column("id").to_pylist()  # the same texts, the same ids
    assert len(set(ids)) == len(ids)
    assert "Anchor" not in table.column("headword").to_pylist()


def test_a_missing_database_names_the_package_to_install(tmp_path: Path) -> None:
    with pytest.raises(MissingAssetError, match="apt-get install dict-gcide"):
        read_gcide(tmp_path / "gcide.dict.dz")


@pytest.mark.skipif(not Path(GCIDE_PATH).exists(), reason="Debian's dict-gcide not installed")
def test_the_installed_dictionary_loads_as_the_gcide_corpus() -> None:
    config = DataConfig(corpus="gcide")
    table = load_corpus(config)
    labels = table.column("label").to_pylist()
    texts = table.column("text").to_pylist()
    assert table.column_names[:3] == ["id", "text", "label"]
    assert table.num_rows > 25_000
    assert sum(1 for label in set(labels) if labels.count(label) >= 150) >= 25
    assert {"Zool.", "Bot.", "Law", "Naut.", "Her."} <= set(labels)
    assert not any("(Zool.)" in text or "[1913 Webster]" in text or "{" in text for text in texts)
    assert data_fingerprint(config) != data_fingerprint(DataConfig(corpus="fortunes"))
