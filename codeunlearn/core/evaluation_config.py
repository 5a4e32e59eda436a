"""Config sections for judging a run: evaluation, the translation setting, and the promotion gates."""

from __future__ import annotations

from dataclasses import dataclass

from codeunlearn.core.config_fields import setting
from codeunlearn.core.errors import ConfigError

# The translation metrics `translation.metrics` may list.
TRANSLATION_METRICS: tuple[str, ...] = ("bleu", "chrf", "meteor", "bertscore", "term")


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
    """A new mask version becomes `production` only if its evaluation clears both gates."""

    min_forget_drop: float = setting(
        0.5, "normalised forget drop a version needs (0 = codebook model, 1 = base)"
    )
    max_retain_drop: float = setting(0.1, "normalised retain drop a version may have (same scale)")

    def check(self, forget_drop: float, retain_drop: float) -> list[str]:
        """The reasons the gates fail; empty when the version may be promoted."""
        reasons = []
        if not forget_drop >= self.min_forget_drop:
            reasons.append(f"forget drop {forget_drop:.3f} < gates.min_forget_drop {self.min_forget_drop}")
        if not retain_drop <= self.max_retain_drop:
            reasons.append(f"retain drop {retain_drop:.3f} > gates.max_retain_drop {self.max_retain_drop}")
        return reasons
