"""Config sections for judging a run: evaluation and its knowledge probes, the translation setting,
and the promotion gates."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from codeunlearn.core.config_fields import section, setting
from codeunlearn.core.errors import ConfigError

# The translation metrics `translation.metrics` may list.
TRANSLATION_METRICS: tuple[str, ...] = ("bleu", "chrf", "meteor", "bertscore", "term")
# `eval.general_text.source` for the English Debian Reference (codeunlearn.evaluation.general_text).
DEBIAN_REFERENCE = "debian-reference"


def _at_least(section_name: str, minimum: int, **counts: int) -> None:
    """Raises ConfigError naming the first of `counts` below `minimum`."""
    for name, value in counts.items():
        if value < minimum:
            key = f"{section_name}.{name}"
            raise ConfigError(f"{key}={value}: set it to {minimum} or more (YAML or --{key})")


@dataclass(frozen=True)
class ProbeConfig:
    """The multiple-choice knowledge probe (`codeunlearn probe`, `compare --probe`): which of the
    options is a held-out lemma's own gloss?"""

    questions_per_topic: int = setting(
        50, "questions per retained topic; one question is 2 accuracy points at 50"
    )
    forget_questions: int = setting(200, "questions on the forgotten topic")
    options: int = setting(4, "glosses per question, the lemma's own among them; chance is 1/options")
    # So that a topic-wide rise in loss does not give the answer away
    same_topic_distractors: int = setting(1, "wrong options drawn from the question's own topic")
    seed: int = setting(0, "seed of the questions and their options")
    max_length: int = setting(64, "tokens per scored '<lemma>: <gloss>' sequence, BOS included")
    batch_size: int = setting(32, "sequences per scoring batch")

    def validate(self, section_name: str = "eval.probe") -> None:
        """Raises ConfigError for a count below 1, fewer than 2 options, or as many same-topic
        distractors as options."""
        if self.options < 2:
            raise ConfigError(
                f"{section_name}.options={self.options}: use 2 or more (the lemma's gloss and a distractor)"
            )
        if not 0 <= self.same_topic_distractors < self.options:
            raise ConfigError(
                f"{section_name}.same_topic_distractors={self.same_topic_distractors}: use 0 to "
                f"{self.options - 1}, fewer than {section_name}.options={self.options}"
            )
        _at_least(
            section_name,
            1,
            questions_per_topic=self.questions_per_topic,
            forget_questions=self.forget_questions,
            batch_size=self.batch_size,
        )


@dataclass(frozen=True)
class DefinitionConfig:
    """The definition probe (`codeunlearn probe`): each model defines held-out lemmas, scored by chrF."""

    forget_lemmas: int = setting(50, "lemmas to define on the forgotten topic")
    lemmas_per_topic: int = setting(10, "lemmas to define per retained topic")
    # WordNet noun glosses are ~12 tokens; longer costs time, not score
    max_new_tokens: int = setting(24, "most tokens generated per definition (greedy; first line kept)")
    batch_size: int = setting(32, "prompts per generation batch")
    seed: int = setting(0, "seed of the lemma sample")

    def validate(self, section_name: str = "eval.definitions") -> None:
        """Raises ConfigError when a count is below 1 (to skip the probe, turn it off instead)."""
        _at_least(
            section_name,
            1,
            forget_lemmas=self.forget_lemmas,
            lemmas_per_topic=self.lemmas_per_topic,
            max_new_tokens=self.max_new_tokens,
            batch_size=self.batch_size,
        )


@dataclass(frozen=True)
class GeneralTextConfig:
    """The general-text probe (`codeunlearn probe`): NLL on prose in another format than training."""

    source: str = setting(
        DEBIAN_REFERENCE, "debian-reference, or a text file whose passages are separated by blank lines"
    )
    passages: int = setting(100, "passages scored, a seeded sample")
    max_length: int = setting(128, "tokens per passage, BOS included")
    # Shorter paragraphs (headings, one-liners, captions) are not prose
    min_chars: int = setting(200, "characters a paragraph needs to be sampled")
    seed: int = setting(0, "seed of the passage sample")
    batch_size: int = setting(16, "passages per batch")

    def validate(self, section_name: str = "eval.general_text") -> None:
        """Raises ConfigError for a count below its minimum or a source file that does not exist."""
        _at_least(section_name, 1, passages=self.passages, batch_size=self.batch_size)
        _at_least(section_name, 2, max_length=self.max_length)  # BOS and one scored token
        _at_least(section_name, 0, min_chars=self.min_chars)
        if self.source != DEBIAN_REFERENCE and not Path(self.source).is_file():
            raise ConfigError(
                f"{section_name}.source={self.source!r} is neither {DEBIAN_REFERENCE!r} nor a file: give a "
                "text file (passages separated by blank lines) or the default"
            )


@dataclass(frozen=True)
class EvalConfig:
    """Evaluation of base, codebook, masked and random-mask models."""

    batch_size: int = setting(32, "texts per evaluation batch")
    sweep: tuple[int, ...] = setting((64, 128, 192, 256, 384), "S' values for the mask sweep; empty skips it")
    random_seed: int = setting(1234, "seed of the random masks the topic's mask is compared with")
    run_reference: bool = setting(False, "also fine-tune the base model without a bottleneck (criterion 3)")
    # Runs that share a file reuse each other's reference wherever the key matches (ablations do)
    reference_cache: str = setting(
        "", "file caching the reference's NLL; '' is <run_dir>/eval/reference_nll.json"
    )
    probe: ProbeConfig = section(ProbeConfig, "the multiple-choice knowledge probe")
    definitions: DefinitionConfig = section(DefinitionConfig, "the definition probe, scored by chrF")
    general_text: GeneralTextConfig = section(
        GeneralTextConfig, "the probe's NLL on general text in another format"
    )

    def validate(self) -> None:
        """Check the probes' settings (the sweep is checked against the codebook by RunConfig)."""
        self.probe.validate()
        self.definitions.validate()
        self.general_text.validate()


@dataclass(frozen=True)
class TranslationConfig:
    """The paper's translation setting (`codeunlearn translate-eval`): source text in, translation out.

    The corpus's `text` column is the source sentence (topics are matched there, as in the paper);
    `target_column` holds its translation. Causal LMs see `prompt` then the target, loss on the
    target only; T5-family models get `t5_prefix` + source on the encoder side.
    """

    source_name: str = setting("English", "the source language's name, as the prompt says it")
    target_name: str = setting("Spanish", "the target language's name, as the prompt says it")
    target_column: str = setting("target", "the corpus column holding each source sentence's translation")
    prompt: str = setting(
        "Translate {source_name} to {target_name}:\n{source}\n{target_name}:",
        "what a causal LM sees before the target; {source} marks the source sentence",
    )
    t5_prefix: str = setting(
        "translate {source_name} to {target_name}: ", "what a T5-family encoder sees before the source"
    )
    max_target_tokens: int = setting(64, "tokens of a target kept for training and scoring")
    max_new_tokens: int = setting(64, "tokens generated per translation")
    max_eval_examples: int = setting(
        100, "examples per evaluated split (topic, rest); generation is the slow part"
    )
    metrics: tuple[str, ...] = setting(
        ("bleu", "chrf", "meteor", "bertscore"),
        "translation metrics: any of bleu, chrf, meteor, bertscore, term",
    )
    wordnet_synonyms: bool = setting(
        True, "METEOR's WordNet synonym stage; only meaningful for English targets"
    )
    # The `term` metric is the share of translations that still carry one where the reference does
    target_keywords: tuple[str, ...] = setting(
        (), "the topic's words in the target language, e.g. [noyau, noyaux]"
    )
    # No training target is cut, and no translation is scored against a reference longer than it may be
    whole_targets: bool = setting(False, "keep only the pairs whose target fits in max_target_tokens")

    def validate(self) -> None:
        unknown = [m for m in self.metrics if m not in TRANSLATION_METRICS]
        if unknown:
            raise ConfigError(
                f"translation.metrics has {unknown}: use any of {', '.join(TRANSLATION_METRICS)}"
            )
        if "term" in self.metrics and not any(k.strip() for k in self.target_keywords):
            raise ConfigError(
                "translation.metrics has term, but translation.target_keywords is empty: list the topic's "
                "words in the target language (e.g. [noyau, noyaux]), or drop term"
            )
        if "{source}" not in self.prompt:
            raise ConfigError(
                f"translation.prompt={self.prompt!r} has no {{source}} placeholder: add one where the "
                "source sentence goes"
            )
        if self.max_new_tokens < 1 or self.max_eval_examples < 1 or self.max_target_tokens < 1:
            raise ConfigError(
                "translation.max_new_tokens, max_eval_examples and max_target_tokens must be 1 or more"
            )


@dataclass(frozen=True)
class GatesConfig:
    """What a new mask version must clear to become `production`, judged on the topic's held-out sets.

    The normalised drops divide by the codebook model's gain over the base model, so a topic the codebook
    model barely learned gives ratios of noise: `min_gain` fails such a topic outright ("not learned"), and
    every reason quotes the raw nats beside the ratio. `max_random_share` fails a mask whose forgetting a
    random mask of the same size mostly matches (it damages the model rather than the topic). The outcome
    is judged by codeunlearn.evaluation.outcome.TopicOutcome.failures.
    """

    min_forget_drop: float = setting(
        0.8, "normalised forget drop a version needs (0 = codebook model, 1 = base)"
    )
    max_retain_drop: float = setting(0.05, "normalised retain drop a version may have (same scale)")
    max_random_share: float = setting(
        0.2,
        "a random mask of the same size may raise forget NLL by at most this share of the mined mask's rise",
    )
    min_gain: float = setting(
        0.1,
        "nats/token the codebook model must gain over the base model on the topic's held-out forget set; "
        "below it the topic is 'not learned' and fails",
    )

    def validate(self) -> None:
        """Raises ConfigError for a gate that is NaN or that no version can clear: a forget drop above 1
        (more than back to the base model), a retain drop or random share below 0. A gate set far the
        other way (min_forget_drop=-1e9, min_gain=-1e9, max_random_share=1e9) lets every version through."""
        for name in ("min_forget_drop", "max_retain_drop", "max_random_share", "min_gain"):
            if math.isnan(getattr(self, name)):
                raise ConfigError(f"gates.{name}=nan: give a number (YAML or --gates.{name})")
        if self.min_forget_drop > 1:
            raise ConfigError(
                f"gates.min_forget_drop={self.min_forget_drop}: set it to 1 or less (1 = as far as the base "
                "model, 0 = the codebook model), e.g. 0.8 (YAML or --gates.min_forget_drop)"
            )
        if self.max_retain_drop < 0:
            raise ConfigError(
                f"gates.max_retain_drop={self.max_retain_drop}: set it to 0 or more (0 = no damage to the "
                "retained topics), e.g. 0.05 (YAML or --gates.max_retain_drop)"
            )
        if self.max_random_share < 0:
            raise ConfigError(
                f"gates.max_random_share={self.max_random_share}: set it to 0 or more (0 = a random mask of "
                "the same size may not raise forget NLL at all), e.g. 0.2 (YAML or --gates.max_random_share)"
            )
