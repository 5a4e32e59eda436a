"""Typed run configuration: one frozen dataclass per stage, nested in `RunConfig`.

YAML fills it (`load_config`), dotted overrides (`train.lr=3e-4`) change one field each, and every
value is checked against its field's type before any model loads.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from codeunlearn.core.errors import ConfigError


def unknown_choice(setting: str, value: object, choices: typing.Sequence[str], what: str) -> ConfigError:
    """The error for a value outside its choices: the value, the closest choice and all of them."""
    close = difflib.get_close_matches(str(value), list(choices), n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    return ConfigError(
        f"{setting}={value!r} is not {what}{hint}: use one of {', '.join(choices)} (YAML or --{setting})"
    )


@dataclass(frozen=True)
class ModelConfig:
    """Which pretrained causal LM to start from.

    `name` is a built-in offline alias (`smollm2-135m-instruct`), a local directory, or a hub id.
    """

    name: str = "smollm2-135m-instruct"
    device: str = "auto"  # "auto" picks cuda when present, else cpu
    threads: int = 0  # torch CPU threads; 0 keeps torch's default


@dataclass(frozen=True)
class DataConfig:
    """The corpus and how it is split into a global train/test partition."""

    corpus: str = "wordnet"  # "wordnet", a .parquet/.json/.jsonl/.csv file, or a datasets hub id
    text_column: str = "text"
    label_column: str | None = "label"
    hub_split: str = "train"
    wordnet_dir: str = "/usr/share/wordnet"
    wordnet_pos: tuple[str, ...] = ("noun",)
    include_examples: bool = False  # WordNet glosses: keep the quoted usage examples
    test_fraction: float = 0.1
    max_length: int = 48  # tokens per example, BOS included


# The control-set constructions `topic.control` may name (codeunlearn.data.controls builds them).
CONTROL_CHOICES: tuple[str, ...] = ("auto", "swap", "length_matched", "random")
# What decides where a mask acts (BottleneckConfig.mask_condition).
MASK_CONDITIONS: tuple[str, ...] = ("none", "prompt")
# Topic kinds given as words, the ones a control can swap and a mining position can point at.
WORD_TOPIC_KINDS: tuple[str, ...] = ("keywords", "regex")


@dataclass(frozen=True)
class TopicConfig:
    """A deletion topic: exactly one of a label value, keywords, a regex, or a file of examples."""

    label: str | None = "noun.food"
    keywords: tuple[str, ...] = ()
    regex: str | None = None
    examples_file: str | None = None
    max_forget: int = 1200  # examples per set used for mining (train side)
    max_control: int = 1200
    max_retain: int = 1200
    max_eval_forget: int = 250  # held-out examples per split used for evaluation
    max_eval_retain_per_topic: int = 20
    # The control set D~_T (codeunlearn.data.controls): "swap" the topic's words for neutral ones (a word
    # topic only), a "length_matched" or "random" sample of non-topic examples; "auto" is swap for a
    # word topic, else length_matched
    control: str = "auto"
    # The keyword-free probe (codeunlearn.data.topic_words): held-out forget examples with none of the
    # topic's N most indicative words, ranked on the train side; a word must occur in min_count
    # forget examples. A word topic's own words are its pattern, so its probe is empty.
    keyword_free_words: int = 50
    keyword_free_min_count: int = 5

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
                without words, or a keyword-free setting below 1.
        """
        kind = self.kind
        if self.control not in CONTROL_CHOICES:
            raise unknown_choice("topic.control", self.control, CONTROL_CHOICES, "a control construction")
        if self.control == "swap" and kind not in WORD_TOPIC_KINDS:
            raise ConfigError(
                f"topic.control=swap replaces the topic's words, but this topic is a {kind} and has no "
                "words to swap: use topic.control=length_matched or random (auto picks length_matched), "
                "or give the topic as topic.keywords or topic.regex"
            )
        for name in ("keyword_free_words", "keyword_free_min_count"):
            value = getattr(self, name)
            if value < 1:
                raise ConfigError(f"topic.{name}={value}: set it to a whole number of 1 or more")

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


@dataclass(frozen=True)
class BottleneckConfig:
    """The discrete codebook bottleneck and where it sits."""

    layer: int = 20  # decoder layer whose residual output is replaced
    n_codes: int = 4096
    top_k: int = 8
    # "mean" of the top-k codes by cosine (the paper), "projection" of x onto them (least squares), or
    # "pursuit": k codes chosen by orthogonal matching pursuit, x fitted by least squares onto them
    combine: str = "mean"
    rescale: str = "input_norm"  # "input_norm" gives the output the input's norm; "none" keeps the mean
    use_sae: bool = False  # the paper's SAE-codebook variant
    sae_dim: int = 0  # 0 means 4 x hidden size
    l1_coef: float = 1e-3
    mask_policy: str = "next_best"  # "next_best" or "zero"
    # zero policy only: a token's masked codes are dropped only where at least this many of its top_k
    # codes are masked, so a token of a neighbouring topic that shares one or two codes with the
    # forgotten topic keeps them; 1 drops every masked code wherever it is chosen
    mask_gate: int = 1
    # zero policy with mask_gate > 1 only: a lower gate for tokens that follow `mask_context_after`
    # tokens of the same text gated at mask_gate; once a text has shown itself to be about the topic,
    # its weaker topic tokens go too, while a neighbour's text that brushes the topic at a token or
    # two keeps them. 0 turns it off. Sequences must start at position 0 (no left padding).
    mask_context_gate: int = 0
    mask_context_after: int = 1
    # "prompt": text scored or generated after a prompt (the knowledge probe's "<lemma>:", a served
    # request) is masked by the mask's topic detectors instead of the gates: a prompt a detector flags
    # has every code at its tokens emptied and the mask's codes emptied at every later token; an
    # unflagged prompt's text is not masked. Text without a prompt keeps the gates above. Needs the
    # zero policy and masks mined with mining.detector_recall > 0. "none": the gates everywhere.
    mask_condition: str = "none"
    skip_first_token: bool = True  # position 0 is always BOS and carries no content
    chunk_tokens: int = 4096  # tokens per similarity chunk; bounds memory at chunk_tokens x n_codes
    chunk_codes: int = 0  # codes per similarity chunk, partial top-k merged; 0 compares all codes at once
    # >0: rank every code in bf16, keep this many candidates, re-rank them in fp32 (much faster on a GPU
    # with a large codebook; can differ from the exact top-k only where fp32 and bf16 order disagree)
    coarse_candidates: int = 0
    # "exact" scores every code; "grouped" splits the codes into search_groups balanced groups (0: the
    # power of two nearest sqrt(n_codes)) and scores only the codes of each token's search_probes best
    # groups: a fraction of the FLOPs at large C; can differ from exact (bench/bench_search_quality.py)
    search: str = "exact"
    search_groups: int = 0
    search_probes: int = 8

    def _validate_mask_gate(self) -> None:
        if not 1 <= self.mask_gate <= self.top_k:
            raise ConfigError(
                f"bottleneck.mask_gate={self.mask_gate}: use a count between 1 (drop every masked code) "
                f"and top_k={self.top_k} (--bottleneck.mask_gate)"
            )
        if self.mask_gate > 1 and self.mask_policy != "zero":
            raise ConfigError(
                f"bottleneck.mask_gate={self.mask_gate} gates the zero policy, but bottleneck.mask_policy="
                f"{self.mask_policy!r}: set bottleneck.mask_policy=zero, or bottleneck.mask_gate=1"
            )
        if self.mask_context_gate and not 1 <= self.mask_context_gate < self.mask_gate:
            raise ConfigError(
                f"bottleneck.mask_context_gate={self.mask_context_gate} with bottleneck.mask_gate="
                f"{self.mask_gate}: the context gate is a lower count than mask_gate, between 1 and "
                f"{self.mask_gate - 1} (needs mask_gate 2 or more and mask_policy=zero), or 0 for none"
            )
        if self.mask_context_after < 1:
            raise ConfigError(
                f"bottleneck.mask_context_after={self.mask_context_after}: use 1 or more (gated tokens "
                "that must come earlier in the text before the context gate applies)"
            )
        if self.mask_condition not in MASK_CONDITIONS:
            raise unknown_choice(
                "bottleneck.mask_condition", self.mask_condition, MASK_CONDITIONS, "a condition"
            )
        if self.mask_condition == "prompt" and self.mask_policy != "zero":
            raise ConfigError(
                f"bottleneck.mask_condition=prompt empties code slots, but bottleneck.mask_policy="
                f"{self.mask_policy!r}: set bottleneck.mask_policy=zero, or bottleneck.mask_condition=none"
            )

    def validate(self, n_layers: int | None = None) -> None:
        if self.n_codes < 1:
            raise ConfigError(f"bottleneck.n_codes={self.n_codes}: set it to 1 or more")
        if not 1 <= self.top_k <= self.n_codes:
            raise ConfigError(
                f"bottleneck.top_k={self.top_k}, but bottleneck.n_codes={self.n_codes}: "
                f"top_k must be between 1 and n_codes (YAML or --bottleneck.top_k)"
            )
        if self.combine not in ("mean", "projection", "pursuit"):
            raise ConfigError(f"bottleneck.combine={self.combine!r}: use 'mean', 'projection' or 'pursuit'")
        if self.combine == "pursuit" and (
            self.search != "exact" or self.coarse_candidates or self.chunk_codes
        ):
            raise ConfigError(
                f"bottleneck.combine='pursuit' scores every code at each of its top_k steps, so it takes "
                f"search='exact', coarse_candidates=0 and chunk_codes=0 (got search={self.search!r}, "
                f"coarse_candidates={self.coarse_candidates}, chunk_codes={self.chunk_codes}): set those, "
                "or use combine='projection' with the faster searches"
            )
        if self.rescale not in ("input_norm", "none"):
            raise ConfigError(f"bottleneck.rescale={self.rescale!r}: use 'input_norm' or 'none'")
        if self.mask_policy not in ("next_best", "zero"):
            raise ConfigError(f"bottleneck.mask_policy={self.mask_policy!r}: use 'next_best' or 'zero'")
        self._validate_mask_gate()
        if self.chunk_tokens < 1 or self.chunk_codes < 0:
            raise ConfigError(
                f"bottleneck.chunk_tokens={self.chunk_tokens}, bottleneck.chunk_codes={self.chunk_codes}: "
                "chunk_tokens must be 1 or more, chunk_codes 0 (all codes) or more"
            )
        if self.coarse_candidates and not self.top_k <= self.coarse_candidates <= self.n_codes:
            raise ConfigError(
                f"bottleneck.coarse_candidates={self.coarse_candidates}: set 0 (exact fp32 ranking) or a "
                f"count between top_k={self.top_k} and n_codes={self.n_codes}, e.g. {4 * self.top_k}"
            )
        self._validate_search()
        if n_layers is not None and not 0 <= self.layer < n_layers:
            raise ConfigError(
                f"bottleneck.layer={self.layer}, but the model has {n_layers} decoder layers: "
                f"set it between 0 and {n_layers - 1} (YAML or --bottleneck.layer)"
            )

    @property
    def n_search_groups(self) -> int:
        """G of the grouped search: search_groups, or the power of two nearest sqrt(n_codes)."""
        return self.search_groups or default_search_groups(self.n_codes, self.top_k)

    def _validate_search(self) -> None:
        if self.search not in ("exact", "grouped"):
            raise ConfigError(f"bottleneck.search={self.search!r}: use 'exact' or 'grouped'")
        if self.search == "exact":
            return
        if self.coarse_candidates:
            raise ConfigError(
                f"bottleneck.coarse_candidates={self.coarse_candidates} applies to search='exact' only: "
                "set it to 0 with bottleneck.search=grouped"
            )
        groups = self.n_search_groups
        if groups & (groups - 1) or not 1 <= groups <= self.n_codes:
            raise ConfigError(
                f"bottleneck.search_groups={self.search_groups}: set 0 (about sqrt(n_codes): "
                f"{default_search_groups(self.n_codes, self.top_k)}) or a power of two up to "
                f"n_codes={self.n_codes}"
            )
        if not self.top_k <= self.search_probes <= groups:
            raise ConfigError(
                f"bottleneck.search_probes={self.search_probes}: set it between top_k={self.top_k} (so every "
                f"token finds top_k usable codes) and the number of groups, {groups}"
            )


def default_search_groups(n_codes: int, top_k: int) -> int:
    """The power of two nearest sqrt(n_codes), so groups number about as many as their codes, halved
    until a group holds at least top_k codes."""
    groups = 2 ** max(0, round(math.log2(math.sqrt(max(1, n_codes)))))
    while groups > 1 and math.ceil(n_codes / groups) < top_k:
        groups //= 2
    return groups


@dataclass(frozen=True)
class TrainConfig:
    """Codebook training. `mode`: frozen (bottleneck only), above (bottleneck + layers above), joint."""

    mode: str = "above"
    max_examples: int = 12000
    epochs: float = 1.0
    batch_size: int = 16
    lr: float = 1e-3  # bottleneck learning rate (codes are unit vectors)
    base_lr: float = 2e-4  # learning rate of base-model weights in modes above/joint
    weight_decay: float = 0.0
    recon_coef: float = 0.1
    init: str = "kmeans"  # "kmeans" or "sample": codes start from real activations
    init_vectors: int = 12288  # activations sampled for code initialisation (k-means cost grows with it)
    kmeans_iters: int = 5
    reseed_every: int = 50  # steps between dead-code re-seeding; 0 turns it off
    checkpoint_every: int = 100
    seed: int = 0
    # torch.compile each decoder layer's forward (the bottleneck stays eager), meant for GPU runs; off
    # by default: the first compile takes tens of seconds (about 40 s on a 2-core CPU)
    compile: bool = False
    # Prose unlike the corpus mixed into the training texts, so that the codes also cover text the
    # model meets outside the corpus: "" (none), "debian-handbook" (the English Debian Administrator's
    # Handbook, which the general-text probe never reads) or a text file of blank-line-separated passages
    general_text: str = ""
    general_fraction: float = 0.25  # share of max_examples drawn from general_text (when it is set)

    def validate(self) -> None:
        if self.mode not in ("frozen", "above", "joint"):
            raise ConfigError(f"train.mode={self.mode!r}: use 'frozen', 'above' or 'joint'")
        if not 0 <= self.general_fraction < 1:
            raise ConfigError(
                f"train.general_fraction={self.general_fraction}: set a share in [0, 1) of the training "
                "examples to draw from train.general_text"
            )
        if self.general_text not in ("", "debian-handbook") and not Path(self.general_text).is_file():
            raise ConfigError(
                f"train.general_text={self.general_text!r} is neither 'debian-handbook' nor a file: give a "
                "text file (passages separated by blank lines), 'debian-handbook', or '' for none"
            )
        if self.init not in ("kmeans", "sample"):
            raise ConfigError(f"train.init={self.init!r}: use 'kmeans' or 'sample'")
        if self.batch_size < 1 or self.epochs <= 0:
            raise ConfigError(
                f"train.batch_size={self.batch_size}, train.epochs={self.epochs}: both must be positive"
            )


@dataclass(frozen=True)
class MiningConfig:
    """How topic codes are scored and selected."""

    rule: str = "enrichment"  # a name in codeunlearn.unlearning.selection.SELECTION_RULES
    n_select: int = 192  # S': codes to mask (top S'); 0 means all codes past the thresholds
    min_count: int = 5  # token firings on the forget set below which a code is never selected
    max_p_value: float = 1e-3  # chi-squared significance guard
    min_enrichment: float = 2.0
    batch_size: int = 32
    # "all" content tokens, or "topic_words": for a keyword/regex topic with its word-swap control, only
    # the topic words in D_T and the words that replaced them in the control (codeunlearn.data.positions)
    positions: str = "all"
    # > 0: also fit the topic's prompt detector (unlearning/topic_detector.py), its threshold where it
    # flags this share of the topic's training prompts in cross-validation; bottleneck.mask_condition=
    # prompt needs it. 0.35 on configs/pursuit.yaml: `codeunlearn probe` noun.food halfway to chance,
    # every other topic within 2 points (BENCHMARKS.md)
    detector_recall: float = 0.0
    # the detector is fitted on every training text of the topic against at most this many others
    detector_negatives: int = 20000

    def validate(self, n_codes: int | None = None) -> None:
        if not 0 <= self.detector_recall <= 1:
            raise ConfigError(
                f"mining.detector_recall={self.detector_recall}: use a share in (0, 1], or 0 for no detector"
            )
        if self.detector_negatives < 1:
            raise ConfigError(f"mining.detector_negatives={self.detector_negatives}: set it to 1 or more")
        if self.positions not in ("all", "topic_words"):
            raise ConfigError(f"mining.positions={self.positions!r}: use 'all' or 'topic_words'")
        if self.n_select < 0:
            raise ConfigError(f"mining.n_select={self.n_select}: use 0 (threshold) or a positive count")
        if n_codes is not None and self.n_select > n_codes:
            raise ConfigError(
                f"mining.n_select={self.n_select}, but the codebook has {n_codes} codes: "
                f"set S' at most {n_codes} (--mining.n_select)"
            )


# `unlearn.method` for the default: mask the mined codes, no gradient steps. Every other method is a
# gradient baseline from the registry in codeunlearn.baselines.methods (`method_names()`).
MASK_METHOD = "mask"


@dataclass(frozen=True)
class BaselineConfig:
    """One gradient unlearning run. Defaults follow the NPO paper's TOFU budget (10 epochs, lr 1e-5).

    It lives here, not in codeunlearn.baselines.methods, so that `RunConfig` can nest it (`unlearn.baseline`)
    without importing torch; codeunlearn.baselines.methods imports it from here.
    """

    method: str = "npo"  # "ga", "graddiff", "npo" (BASELINE_METHODS) or "rmu"
    lr: float = 1e-5
    epochs: int = 10  # passes over the forget batches; one optimizer step per forget batch
    batch_size: int = 8  # examples per batch, for whoever builds the batches with make_batches
    beta: float = 0.1  # NPO inverse temperature
    retain_coef: float = 1.0  # weight of the retain NLL (GradDiff; NPO+RT); 0 makes NPO plain NPO
    max_grad_norm: float = 1.0  # gradient clipping; GA's loss is unbounded below
    weight_decay: float = 0.01
    seed: int = 0
    # RMU (its own loop; lr above is not used by it): the paper's Zephyr-7B settings, but the steering
    # norm is a multiple of the measured activation norm (codeunlearn.baselines.rmu says why).
    rmu_layer: int | None = None  # None: a quarter of the way up (layer 7 of SmolLM2's 30)
    rmu_steering: float = 16.0  # tuned on the default run (BENCHMARKS.md)
    rmu_alpha: float = 1200.0  # weight of the retain activations' MSE
    rmu_lr: float = 5e-5

    def validate(self, section: str = "baseline") -> None:
        """Check the method against the registry, then every setting.

        Args:
            section: The dotted name errors call this config by (`unlearn.baseline` in a RunConfig).

        Raises:
            ConfigError: an unregistered method, or a setting out of range.
        """
        from codeunlearn.baselines.methods import method_names  # the registry imports torch

        if self.method not in method_names():
            raise ConfigError(
                f"{section}.method={self.method!r}: use one of {', '.join(method_names())} "
                f"(YAML or --{section}.method)"
            )
        self.validate_settings(section)

    def validate_settings(self, section: str = "baseline") -> None:
        """Check every setting but the method; needs no registry, so no torch.

        Raises:
            ConfigError: a setting out of range, naming it and the bound.
        """
        if self.rmu_layer is not None and self.rmu_layer < 0:
            raise ConfigError(f"{section}.rmu_layer={self.rmu_layer}: give a decoder layer index, 0 or more")
        numbers = ("lr", "epochs", "batch_size", "beta", "max_grad_norm", "retain_coef", "weight_decay")
        for name in (*numbers, "rmu_steering", "rmu_alpha", "rmu_lr"):
            value, may_be_zero = getattr(self, name), name in ("retain_coef", "weight_decay")
            if not (value >= 0 if may_be_zero else value > 0):
                bound = "to 0 or more" if may_be_zero else "above 0"
                raise ConfigError(f"{section}.{name}={value}: set it {bound} (YAML or --{section}.{name})")


@dataclass(frozen=True)
class UnlearnConfig:
    """How the unlearn stage answers the request.

    `mask` (the default) masks the mined codes: no gradient steps. A gradient baseline (ga, graddiff,
    npo, rmu) runs in its place: it fine-tunes a copy of the trained codebook model on the forget subset
    and retain texts `codeunlearn compare` gives the baselines, and saves it under
    `<run_dir>/unlearned/<method>/`; the active mask is left alone.
    """

    method: str = MASK_METHOD
    forget_limit: int = 200  # forget examples a baseline trains on (trained-on first); 4x as many retain
    # The baseline's hyper-parameters. Its own `method` is not read: unlearn.method picks the method.
    baseline: BaselineConfig = field(default_factory=BaselineConfig)

    @property
    def uses_gradients(self) -> bool:
        """Whether the stage fine-tunes weights (a baseline) rather than masking codes."""
        return self.method != MASK_METHOD

    @property
    def gradient_config(self) -> BaselineConfig:
        """The baseline's settings with `method` taken from unlearn.method."""
        return dataclasses.replace(self.baseline, method=self.method)

    def validate(self) -> None:
        """Check the method against `mask` and the baseline registry, and the baseline's settings.

        Only a gradient method looks the registry up (it imports torch); `mask` checks the numbers only.

        Raises:
            ConfigError: an unknown method (listing the valid ones), a forget_limit below 1, a
                baseline.method that disagrees with unlearn.method, or a baseline setting out of range.
        """
        if self.forget_limit < 1:
            raise ConfigError(f"unlearn.forget_limit={self.forget_limit}: set it to 1 or more")
        if not self.uses_gradients:
            self.baseline.validate_settings("unlearn.baseline")
            return
        from codeunlearn.baselines.methods import method_names  # the registry imports torch

        valid = [MASK_METHOD, *method_names()]
        if self.method not in valid:
            raise unknown_choice("unlearn.method", self.method, valid, "an unlearning method")
        if self.baseline.method not in (BaselineConfig.method, self.method):
            raise ConfigError(
                f"unlearn.baseline.method={self.baseline.method!r}, but unlearn.method={self.method!r} picks "
                f"the method: set unlearn.method={self.baseline.method} instead, and leave "
                "unlearn.baseline.method out"
            )
        self.gradient_config.validate("unlearn.baseline")


@dataclass(frozen=True)
class EvalConfig:
    """Evaluation of base, codebook, masked and random-mask models."""

    batch_size: int = 32
    sweep: tuple[int, ...] = (64, 128, 192, 256, 384)  # S' values for the sweep; empty skips it
    random_seed: int = 1234
    run_reference: bool = False  # also fine-tune the base model without a bottleneck (criterion 3)
    # where the reference's NLL is cached, keyed: "" is <run_dir>/eval/reference_nll.json; runs that
    # share a file reuse each other's reference wherever the key matches (ablations do)
    reference_cache: str = ""


@dataclass(frozen=True)
class TranslationConfig:
    """The paper's translation setting (`codeunlearn translate-eval`): source text in, translation out.

    The corpus's `text` column is the source sentence (topics are matched there, as in the paper);
    `target_column` holds its translation. Causal LMs see `prompt` then the target, loss on the
    target only; T5-family models get `t5_prefix` + source on the encoder side.
    """

    source_name: str = "English"
    target_name: str = "Spanish"
    target_column: str = "target"
    prompt: str = "Translate {source_name} to {target_name}:\n{source}\n{target_name}:"
    t5_prefix: str = "translate {source_name} to {target_name}: "
    max_target_tokens: int = 64
    max_new_tokens: int = 64
    max_eval_examples: int = 100  # per evaluated split (topic, rest); generation is the slow part
    metrics: tuple[str, ...] = ("bleu", "chrf", "meteor", "bertscore")
    wordnet_synonyms: bool = True  # METEOR synonym stage from WordNet; only meaningful for English targets
    # The topic's words in the target language (e.g. [noyau, noyaux] for "kernel"): the `term` metric
    # is the share of translations that still carry one where the reference does
    target_keywords: tuple[str, ...] = ()
    # Keep only the pairs whose target fits in max_target_tokens: no training target is cut, and no
    # translation is scored against a reference longer than it may be
    whole_targets: bool = False

    def validate(self) -> None:
        known = ("bleu", "chrf", "meteor", "bertscore", "term")
        unknown = [m for m in self.metrics if m not in known]
        if unknown:
            raise ConfigError(f"translation.metrics has {unknown}: use any of {', '.join(known)}")
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
class TrackingConfig:
    """Where MLflow runs, registered models and deletion requests live.

    Empty strings take defaults under `state_dir`, so one directory holds the whole tracked state.
    """

    state_dir: str = "state"
    tracking_uri: str = ""  # default: sqlite:///<state_dir>/mlflow.db
    artifact_root: str = ""  # default: <state_dir>/mlartifacts
    experiment: str = ""  # default: codeunlearn-<model>; one experiment per base model
    model_name: str = ""  # registered-model prefix; default: the model name made registry-safe
    enabled: bool = True  # False runs the flows without MLflow (no registry, no promotion)

    def resolved_tracking_uri(self) -> str:
        return self.tracking_uri or f"sqlite:///{(Path(self.state_dir) / 'mlflow.db').resolve()}"

    def resolved_artifact_root(self) -> str:
        return self.artifact_root or str((Path(self.state_dir) / "mlartifacts").resolve())


@dataclass(frozen=True)
class GatesConfig:
    """A new mask version becomes `production` only if its evaluation clears both gates."""

    min_forget_drop: float = 0.5  # normalised forget drop (0 = codebook model, 1 = base model)
    max_retain_drop: float = 0.1  # normalised retain drop allowed (same scale)

    def check(self, forget_drop: float, retain_drop: float) -> list[str]:
        """The reasons the gates fail; empty when the version may be promoted."""
        reasons = []
        if not forget_drop >= self.min_forget_drop:
            reasons.append(f"forget drop {forget_drop:.3f} < gates.min_forget_drop {self.min_forget_drop}")
        if not retain_drop <= self.max_retain_drop:
            reasons.append(f"retain drop {retain_drop:.3f} > gates.max_retain_drop {self.max_retain_drop}")
        return reasons


@dataclass(frozen=True)
class RunConfig:
    """Everything one run needs; the CLI, the flows and the tests build exactly this."""

    run_dir: str = "runs/default"
    seed: int = 0
    offline: bool = True  # never reach a model or dataset hub
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    topic: TopicConfig = field(default_factory=TopicConfig)
    bottleneck: BottleneckConfig = field(default_factory=BottleneckConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    mining: MiningConfig = field(default_factory=MiningConfig)
    unlearn: UnlearnConfig = field(default_factory=UnlearnConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    translation: TranslationConfig = field(default_factory=TranslationConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    gates: GatesConfig = field(default_factory=GatesConfig)

    def validate(self) -> None:
        """Checks that need no model; layer range is checked once the model is known."""
        kind = self.topic.kind
        self.topic.validate()
        if self.mining.positions == "topic_words" and kind not in WORD_TOPIC_KINDS:
            raise ConfigError(
                f"mining.positions=topic_words needs a topic given as words (topic.keywords or "
                f"topic.regex), but this topic is a {kind}: use mining.positions=all"
            )
        if self.mining.positions == "topic_words" and self.topic.control not in ("auto", "swap"):
            raise ConfigError(
                f"mining.positions=topic_words counts the words a swap control put in place of the topic's, "
                f"but topic.control={self.topic.control} swaps none: use topic.control=swap (or auto), or "
                "mining.positions=all"
            )
        self.bottleneck.validate()
        if self.bottleneck.mask_condition == "prompt" and not self.mining.detector_recall:
            raise ConfigError(
                "bottleneck.mask_condition=prompt masks what the topic's prompt detector flags, but "
                "mining.detector_recall=0 fits none: set mining.detector_recall (e.g. 0.35)"
            )
        self.train.validate()
        self.mining.validate(self.bottleneck.n_codes)
        self.unlearn.validate()
        self.translation.validate()
        for n_select in self.eval.sweep:
            MiningConfig(n_select=n_select).validate(self.bottleneck.n_codes)


def load_config(path: str | Path | None = None, overrides: typing.Sequence[str] = ()) -> RunConfig:
    """Build a RunConfig from an optional YAML file and `section.key=value` overrides.

    Raises:
        ConfigError: an unknown key (naming the closest valid one), a wrongly typed value, or a
            missing file.
    """
    raw: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist: pass the path of a YAML file")
        raw = yaml.safe_load(path.read_text()) or {}
        if not isinstance(raw, dict):
            raise ConfigError(f"config file {path} must hold a mapping at the top level")
    _clear_default_label(raw)  # a file that names keywords needs no label: null
    for override in overrides:
        _apply_override(raw, override)
    override_keys = {o.lstrip("-").partition("=")[0] for o in overrides}
    if "topic.label" not in override_keys and override_keys & {
        "topic.keywords",
        "topic.regex",
        "topic.examples_file",
    }:
        raw["topic"]["label"] = None  # a topic given on the command line replaces the file's or default label
    config = _build(RunConfig, raw, prefix="")
    config.validate()
    return config


def with_overrides(config: RunConfig, overrides: typing.Sequence[str]) -> RunConfig:
    """A copy of `config` with `section.key=value` overrides applied and checked, as on the command line.

    Raises:
        ConfigError: an unknown key or a wrongly typed value.
    """
    raw = config_to_dict(config)
    for override in overrides:
        _apply_override(raw, override)
    updated = _build(RunConfig, raw, prefix="")
    updated.validate()
    return updated


def config_to_dict(config: Any) -> dict[str, Any]:
    """The config as plain YAML-safe data (tuples become lists)."""

    def plain(value: Any) -> Any:
        if isinstance(value, tuple):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value

    return plain(dataclasses.asdict(config))


def save_config(config: RunConfig, path: Path) -> None:
    path.write_text(yaml.safe_dump(config_to_dict(config), sort_keys=False))


def flatten_config(config: RunConfig) -> dict[str, Any]:
    """`section.key -> value` pairs, for logging as flat parameters."""
    flat: dict[str, Any] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for key, sub in value.items():
                walk(f"{prefix}{key}." if isinstance(sub, dict) else f"{prefix}{key}", sub)
        else:
            flat[prefix] = value

    for key, value in config_to_dict(config).items():
        walk(f"{key}." if isinstance(value, dict) else key, value)
    return flat


def _clear_default_label(raw: dict[str, Any]) -> None:
    """A topic given by keywords, regex or examples replaces the default label topic."""
    topic = raw.get("topic")
    others = ("keywords", "regex", "examples_file")
    if isinstance(topic, dict) and "label" not in topic and any(topic.get(key) for key in others):
        topic["label"] = None


def _apply_override(raw: dict[str, Any], override: str) -> None:
    key, sep, text = override.lstrip("-").partition("=")
    if not sep or not key:
        raise ConfigError(f"override {override!r} is not of the form section.key=value")
    node = raw
    parts = key.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {override!r}: {part} is not a section")
    node[parts[-1]] = yaml.safe_load(text) if text != "" else ""


def _build(cls: type, raw: dict[str, Any], prefix: str) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'} must be a mapping, got {raw!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in fields:
            close = difflib.get_close_matches(key, fields, n=1)
            hint = f"; did you mean {prefix}{close[0]}?" if close else f"; valid keys: {', '.join(fields)}"
            raise ConfigError(f"unknown config key {prefix}{key}{hint}")
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            kwargs[key] = _build(hint, value or {}, prefix=f"{prefix}{key}.")
        else:
            kwargs[key] = _coerce(value, hint, f"{prefix}{key}")
    return cls(**kwargs)


def _coerce(value: Any, hint: Any, name: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, arg, name)
            except ConfigError as error:
                errors.append(str(error))
        raise ConfigError(errors[0])
    if origin is tuple:
        items = value if isinstance(value, (list, tuple)) else [value]
        return tuple(_coerce(item, args[0], name) for item in items)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is float and isinstance(value, str):
        try:  # YAML 1.1 reads "3e-4" (no dot) as a string
            return float(value)
        except ValueError:
            pass
    if hint is str and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, hint) or (hint is int and isinstance(value, bool)):
        raise ConfigError(f"{name}={value!r} is a {type(value).__name__}, but it must be a {hint.__name__}")
    return value
