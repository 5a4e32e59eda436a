"""Config sections for what a run reads: the base model, the corpus, and the topic to forget."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

from codeunlearn.core.config_fields import setting, unknown_choice
from codeunlearn.core.errors import ConfigError

# The control-set constructions `topic.control` may name (codeunlearn.data.controls builds them).
CONTROL_CHOICES: tuple[str, ...] = ("auto", "swap", "length_matched", "balanced", "random")
# Which train-side rows validation splits are drawn from (codeunlearn.data.topics): any, or first those
# the codebook did not train on, as none of the test split's were.
VAL_ROWS_CHOICES: tuple[str, ...] = ("any", "unseen")
# Topic kinds given as words, the ones a control can swap and a mining position can point at.
WORD_TOPIC_KINDS: tuple[str, ...] = ("keywords", "regex")
# The second built-in corpus: Debian's `fortunes` package, one labelled text per fortune
# (codeunlearn.data.fortunes).
FORTUNES_CORPUS = "fortunes"
FORTUNES_DIR = "/usr/share/games/fortunes"
# The third: Webster's 1913 dictionary in Debian's `dict-gcide`, one text per sense with a field label
# such as Zool. or Law (codeunlearn.data.gcide).
GCIDE_CORPUS = "gcide"
GCIDE_PATH = "/usr/share/dictd/gcide.dict.dz"
# The fourth: the Python standard library reference in Debian's `python3-doc`, one text per paragraph
# labelled by its page, such as re or sqlite3 (codeunlearn.data.python_docs).
PYTHON_DOCS_CORPUS = "python-docs"
PYTHON_DOCS_DIR = "/usr/share/doc/python3/html"


@dataclass(frozen=True)
class ModelConfig:
    """Which pretrained causal LM to start from."""

    name: str = setting(
        "smollm2-135m-instruct",
        "a built-in offline alias (smollm2-135m-instruct), a local directory or a hub id",
    )
    device: str = setting("auto", "torch device; auto picks cuda when present, else cpu")
    threads: int = setting(0, "torch CPU threads; 0 keeps torch's default")


@dataclass(frozen=True)
class DataConfig:
    """The corpus and how it is split into a global train/test partition."""

    corpus: str = setting(
        "wordnet",
        "wordnet, fortunes (Debian's fortune files by category), gcide (Webster's 1913 senses by field "
        "label), python-docs (the Python library reference's paragraphs by page), a "
        ".parquet/.json/.jsonl/.csv file, or a datasets hub id",
    )
    text_column: str = setting("text", "the corpus column holding each example's text")
    label_column: str | None = setting("label", "the corpus column holding each example's topic label")
    hub_split: str = setting("train", "the split read from a datasets hub corpus")
    wordnet_dir: str = setting("/usr/share/wordnet", "directory of the WordNet database files")
    wordnet_pos: tuple[str, ...] = setting(("noun",), "WordNet parts of speech whose glosses are read")
    include_examples: bool = setting(False, "WordNet glosses keep their quoted usage examples")
    test_fraction: float = setting(0.1, "share of the corpus held out as the global test split")
    max_length: int = setting(48, "tokens per example, BOS included")

    def validate(self) -> None:
        """Raises ConfigError for a test fraction outside (0, 1) or fewer than 2 tokens per example."""
        if not 0 < self.test_fraction < 1:
            raise ConfigError(
                f"data.test_fraction={self.test_fraction}: set a share strictly between 0 and 1, e.g. 0.1 "
                "(YAML or --data.test_fraction)"
            )
        if self.max_length < 2:
            raise ConfigError(f"data.max_length={self.max_length}: set it to 2 or more (BOS and one token)")

    @property
    def source_path(self) -> Path:
        """Where the corpus lies on disk: the WordNet or fortunes directory, the GCIDE database, the
        Python library reference's pages, else `corpus` as a path."""
        if self.corpus == "wordnet":
            return Path(self.wordnet_dir)
        if self.corpus == FORTUNES_CORPUS:
            return Path(FORTUNES_DIR)
        if self.corpus == GCIDE_CORPUS:
            return Path(GCIDE_PATH)
        if self.corpus == PYTHON_DOCS_CORPUS:
            return Path(PYTHON_DOCS_DIR) / "library"
        return Path(self.corpus)


@dataclass(frozen=True)
class TopicConfig:
    """A deletion topic: exactly one of a label value, keywords, a regex, or a file of examples."""

    label: str | None = setting("noun.food", "forget the examples whose label column has this value")
    keywords: tuple[str, ...] = setting(
        (), "forget the examples that contain any of these words (whole words, any case)"
    )
    regex: str | None = setting(None, "forget the examples that match this regular expression")
    examples_file: str | None = setting(
        None, "forget these examples: a text file, one per line, or a .jsonl/.parquet with a text column"
    )
    max_forget: int = setting(1200, "forget examples used for mining (train side)")
    max_control: int = setting(1200, "control examples used for mining (train side)")
    max_retain: int = setting(1200, "retain examples used for mining (train side)")
    max_eval_forget: int = setting(250, "held-out forget examples per split used for evaluation")
    max_eval_retain_per_topic: int = setting(
        20, "held-out retain examples per other label used for evaluation"
    )
    # Validation splits, cut from the train side apart from mining's sets, so a calibration step can
    # pick settings without reading the held-out test split.
    max_val_forget: int = setting(
        100,
        "held-out-from-mining forget examples (train side) that calibration scores settings on; "
        "0: no validation split",
    )
    max_val_retain: int = setting(
        400,
        "train-side retain examples that calibration scores settings on, shared evenly among the other "
        "labels; 0: none",
    )
    # A text the codebook trained on has a larger gain over the base model than an unseen one, so the
    # same rise in nats reads as a smaller normalised drop on it: validation rows the codebook saw judge
    # a mask more harshly than the test split, all of whose rows are unseen.
    val_rows: str = setting(
        "any",
        "validation rows: any train-side row, or unseen: first the rows the codebook did not train on "
        "(as the test split's), then others where too few are left",
    )
    # The control set D~_T (codeunlearn.data.controls): "swap" the topic's words for neutral ones (a word
    # topic only), a "length_matched", label-"balanced" length-matched or "random" sample of non-topic
    # examples
    control: str = setting(
        "auto",
        "control set: swap, length_matched, balanced or random; auto is swap for a word topic, else "
        "length_matched",
    )
    # The keyword-free probe (codeunlearn.data.topic_words): held-out forget examples with none of the
    # topic's N most indicative words, ranked on the train side. A word topic's own words are its
    # pattern, so its probe is empty.
    keyword_free_words: int = setting(
        50, "the keyword-free probe drops examples with any of this many top words"
    )
    keyword_free_min_count: int = setting(5, "forget examples a word must occur in to count as a top word")

    @property
    def kind(self) -> str:
        given = [
            name
            for name, value in (
                ("label", self.label),
                ("keywords", self.keywords),
                ("regex", self.regex),
                ("examples_file", self.examples_file),
            )
            if value
        ]
        if len(given) != 1:
            raise ConfigError(
                f"topic needs exactly one of label, keywords, regex, examples_file; got {given or 'none'}: "
                "set one (e.g. --topic.label=noun.food) and clear the others (--topic.label=null)"
            )
        return given[0]

    def validate(self) -> None:
        """Checks of the topic's options that need no data.

        Raises:
            ConfigError: not exactly one topic kind, an unknown control, a swap control for a topic
                without words, a keyword-free setting below 1, or a negative validation cap.
        """
        kind = self.kind
        if self.control not in CONTROL_CHOICES:
            raise unknown_choice("topic.control", self.control, CONTROL_CHOICES, "a control construction")
        if self.val_rows not in VAL_ROWS_CHOICES:
            raise unknown_choice(
                "topic.val_rows", self.val_rows, VAL_ROWS_CHOICES, "a source of validation rows"
            )
        if self.control == "swap" and kind not in WORD_TOPIC_KINDS:
            raise ConfigError(
                f"topic.control=swap replaces the topic's words, but this topic is a {kind} and has no "
                "words to swap: use topic.control=length_matched or random (auto picks length_matched), "
                "or give the topic as topic.keywords or topic.regex"
            )
        if kind == "keywords" and not any(word.strip() for word in self.keywords):
            raise ConfigError("topic.keywords holds no words: list one or more, e.g. 'topic.keywords=[love]'")
        if kind == "regex":
            _check_regex(str(self.regex))
        for name in ("keyword_free_words", "keyword_free_min_count"):
            value = getattr(self, name)
            if value < 1:
                raise ConfigError(f"topic.{name}={value}: set it to a whole number of 1 or more")
        check_val_caps(self)

    @property
    def key(self) -> str:
        """A name safe to log and track: the label itself, else the kind and a hash of the words,
        pattern or file, which may be sensitive (a person's name, a private document)."""
        if self.kind == "label":
            return str(self.label)
        value = getattr(self, self.kind)
        digest = hashlib.sha256(json.dumps(list(value) if self.kind == "keywords" else value).encode())
        return f"{self.kind}-{digest.hexdigest()[:12]}"

    @property
    def name(self) -> str:
        kind = self.kind
        if kind == "label":
            return str(self.label)
        if kind == "keywords":
            return "keywords:" + ",".join(self.keywords)
        if kind == "regex":
            return f"regex:{self.regex}"
        return f"examples:{Path(str(self.examples_file)).name}"


def check_val_caps(topic: TopicConfig) -> None:
    """Raises ConfigError for a validation cap below 0 (0 turns that validation split off)."""
    for name in ("max_val_forget", "max_val_retain"):
        value = getattr(topic, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ConfigError(
                f"topic.{name}={value!r}: set it to a whole number of 0 or more (0: no validation split)"
            )


def _check_regex(pattern: str) -> None:
    try:
        re.compile(pattern)
    except re.error as error:
        raise ConfigError(
            f"topic.regex={pattern!r} is not a valid regular expression ({error}): fix it (Python `re` "
            "syntax; escape a literal bracket as \\( )"
        ) from None
