"""General text in a different format than training: does a model still model ordinary English?

The codebook model is trained on "<lemma>: <gloss>" lines, so a drop in NLL on glosses mixes
knowledge with format. Prose paragraphs of another kind show what the bottleneck and a mask cost on
text that is neither: mean per-token NLL of a fixed sample of passages, each cut to `max_length`
tokens (BOS included).

Sources: `debian-reference` (the default), the English paragraphs of the Debian Reference as Debian's
`debian-reference-en` installs them (/usr/share/debian-reference/*.en.html; scripts/install.sh does),
technical prose about a system, far from WordNet's nouns; or a UTF-8 text file whose passages are
separated by blank lines. When the Debian Reference is not installed, `general_passages_or_skip`
returns the reason instead, so that the rest of a probe still runs; a named file that is missing is a
configuration error.

Training mixtures (`train.general_text`) read another book, the Debian Administrator's Handbook
(`training_passages`), so that the probe's passages are never trained on.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from codeunlearn.core.config import DEBIAN_REFERENCE, GeneralTextConfig
from codeunlearn.core.errors import CodeunlearnError, MissingAssetError
from codeunlearn.data.batching import encode_texts, make_batches
from codeunlearn.data.debian_manuals import read_blocks
from codeunlearn.data.parallel_corpus import DEBIAN_HANDBOOK_DIR, DEBIAN_REFERENCE_DIR
from codeunlearn.evaluation.evaluator import EvalSet, perplexity

log = logging.getLogger(__name__)

DEBIAN_REFERENCE_INSTALL = "apt-get install debian-reference-en"
DEBIAN_HANDBOOK = "debian-handbook"  # training mixtures only: the probe reads the Reference
DEBIAN_HANDBOOK_INSTALL = "apt-get install debian-handbook"
_SPACES = re.compile(r"\s+")
_BLANK_LINES = re.compile(r"\n\s*\n")


def reference_paragraphs(reference_dir: Path = DEBIAN_REFERENCE_DIR) -> list[str]:
    """The English prose paragraphs of the Debian Reference, chapter files in name order.

    Raises:
        MissingAssetError: no `*.en.html` in `reference_dir`; the message names the install command.
    """
    pages = sorted(reference_dir.glob("*.en.html"))
    if not pages:
        raise MissingAssetError(
            f"the general-text probe reads the Debian Reference, but {reference_dir} holds no *.en.html: "
            f"install it with `{DEBIAN_REFERENCE_INSTALL}` (scripts/install.sh does), give another text "
            "with --general-source FILE, or turn it off with --no-general-text"
        )
    return _prose_paragraphs(pages)


def handbook_paragraphs(handbook_dir: Path = DEBIAN_HANDBOOK_DIR) -> list[str]:
    """The English prose paragraphs of the Debian Administrator's Handbook, pages in name order.

    Raises:
        MissingAssetError: no `en-US/*.html` under `handbook_dir`; the message names the install command.
    """
    pages = sorted((handbook_dir / "en-US").glob("*.html"))
    if not pages:
        raise MissingAssetError(
            f"train.general_text=debian-handbook, but {handbook_dir / 'en-US'} holds no *.html: install it "
            f"with `{DEBIAN_HANDBOOK_INSTALL}` (scripts/install.sh does), or set train.general_text to a "
            "text file or ''"
        )
    return _prose_paragraphs(pages)


def _prose_paragraphs(pages: list[Path]) -> list[str]:
    """The text blocks of HTML manual pages that are not code, in page order."""
    return [
        block.text
        for page in pages
        for block in read_blocks(page.read_text(encoding="utf-8")).blocks
        if not block.is_code
    ]


def training_passages(source: str, count: int, seed: int, min_chars: int = 100) -> list[str]:
    """`count` distinct prose passages of `source` (`debian-handbook` or a text file) for a training
    mixture, a seeded sample in source order; every passage when there are fewer.

    Raises:
        MissingAssetError: the handbook is not installed.
        CodeunlearnError: no passage has `min_chars` characters.
    """
    paragraphs = handbook_paragraphs() if source == DEBIAN_HANDBOOK else file_paragraphs(Path(source))
    config = GeneralTextConfig(source=DEBIAN_REFERENCE, passages=count, min_chars=min_chars, seed=seed)
    return sample_passages(paragraphs, config)


def file_paragraphs(path: Path) -> list[str]:
    """The blank-line-separated passages of a UTF-8 text file, whitespace collapsed."""
    chunks = _BLANK_LINES.split(path.read_text(encoding="utf-8"))
    return [text for chunk in chunks if (text := _SPACES.sub(" ", chunk).strip())]


def sample_passages(paragraphs: list[str], config: GeneralTextConfig) -> list[str]:
    """A seeded sample of `config.passages` distinct paragraphs of at least `config.min_chars`
    characters (all of them when fewer), in source order.

    Raises:
        CodeunlearnError: no paragraph is long enough.
    """
    eligible = list(dict.fromkeys(p for p in paragraphs if len(p) >= config.min_chars))
    if not eligible:
        raise CodeunlearnError(
            f"no general-text passage has {config.min_chars} characters or more: lower min_chars or give "
            "a source with paragraphs of prose"
        )
    picks = np.random.default_rng(config.seed).permutation(len(eligible))[: config.passages]
    return [eligible[i] for i in sorted(picks)]


def general_passages_or_skip(
    config: GeneralTextConfig, reference_dir: Path = DEBIAN_REFERENCE_DIR
) -> tuple[list[str], str | None]:
    """The passages of `config.source`, or, when the Debian Reference is not installed, no passages
    and the reason (logged as a warning).

    Raises:
        ConfigError: a named source file is missing (see GeneralTextConfig.validate).
    """
    config.validate()
    if config.source != DEBIAN_REFERENCE:
        return sample_passages(file_paragraphs(Path(config.source)), config), None
    try:
        paragraphs = reference_paragraphs(reference_dir)
    except MissingAssetError as error:
        log.warning("general-text probe skipped: %s", error)
        return [], str(error)
    return sample_passages(paragraphs, config), None


def general_text_set(passages: list[str], tokenizer: Any, config: GeneralTextConfig) -> EvalSet:
    """BOS + each passage, cut to `config.max_length` tokens; every token after BOS is scored."""
    ids = encode_texts(tokenizer, passages, config.max_length)
    return EvalSet(
        "general", make_batches(ids, config.batch_size, tokenizer.pad_token_id), ["general"] * len(ids)
    )


@dataclass
class GeneralTextResult:
    """Mean per-token NLL of every model variant on the sample, or why the sample was skipped."""

    source: str
    passages: int
    tokens: int  # scored tokens per variant
    nll: dict[str, float] = field(default_factory=dict)  # variant -> mean NLL, nats per token
    skipped: str | None = None

    def to_markdown(self) -> str:
        """One row per variant: NLL, perplexity and the change against the codebook model."""
        if self.skipped is not None:
            return f"General text: skipped ({self.skipped})\n"
        lines = [
            f"General text in another format ({self.source}, {self.passages} passages, {self.tokens} "
            "scored tokens): mean NLL in nats per token",
            "",
            "| model | NLL | ppl | - codebook |",
            "|---|---|---|---|",
        ]
        codebook = self.nll.get("codebook", float("nan"))
        for variant, nll in self.nll.items():
            lines.append(f"| {variant} | {nll:.4f} | {perplexity(nll):.1f} | {nll - codebook:+.4f} |")
        return "\n".join(lines) + "\n"

    def to_json(self) -> dict:
        return {
            "source": self.source,
            "passages": self.passages,
            "tokens": self.tokens,
            "nll": self.nll,
            "skipped": self.skipped,
        }
