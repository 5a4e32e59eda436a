"""Config sections for the codebook: the bottleneck's shape and search, and how it is trained."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from codeunlearn.core.config_fields import setting, unknown_choice
from codeunlearn.core.errors import ConfigError

# What decides where a mask acts (BottleneckConfig.mask_condition).
MASK_CONDITIONS: tuple[str, ...] = ("none", "prompt", "text")
# The conditions that read the mask's topic detectors (mining.detector_recall fits them).
DETECTOR_CONDITIONS: tuple[str, ...] = ("prompt", "text")


@dataclass(frozen=True)
class BottleneckConfig:
    """The discrete codebook bottleneck and where it sits."""

    layer: int = setting(20, "decoder layer whose residual output the bottleneck replaces")
    n_codes: int = setting(4096, "codes in the codebook")
    top_k: int = setting(8, "codes each token's activation is rebuilt from")
    # "mean" of the top-k codes by cosine (the paper), "projection" of x onto them (least squares), or
    # "pursuit": k codes chosen by orthogonal matching pursuit, x fitted by least squares onto them
    combine: str = setting("mean", "how the top-k codes make the output: mean, projection or pursuit")
    rescale: str = setting("input_norm", "input_norm gives the output the input's norm; none keeps the mean")
    mask_policy: str = setting(
        "next_best", "what takes a masked code's place: next_best (the next closest code) or zero (nothing)"
    )
    # A token of a neighbouring topic that shares one or two codes with the forgotten topic keeps them
    mask_gate: int = setting(
        1, "zero policy: drop masked codes only where this many of a token's top_k are masked"
    )
    # Once a text has shown itself to be about the topic, its weaker topic tokens go too, while a
    # neighbour's text that brushes the topic at a token or two keeps them. Sequences must start at
    # position 0 (no left padding).
    mask_context_gate: int = setting(
        0, "a gate below mask_gate for tokens after mask_context_after gated ones; 0 turns it off"
    )
    mask_context_after: int = setting(1, "gated tokens a text needs before mask_context_gate applies")
    # "prompt": text scored or generated after a prompt (the knowledge probe's "<lemma>:", a served
    # request) is masked by the mask's topic detectors instead of the gates: a prompt a detector flags
    # has every code at its tokens emptied and the mask's codes emptied at every later token; an
    # unflagged prompt's text is not masked. Text without a prompt keeps the gates above. Needs the
    # zero policy and masks mined with mining.detector_recall > 0.
    # "text": the gates everywhere, and in a text whose detector score, read on the mean of its inputs
    # so far, reaches the threshold, the mask's codes at every token from there on (the gate of 1
    # there); causal, so a generated text is masked as its scored text is.
    mask_condition: str = setting(
        "none",
        "where a mask acts: none (the gates everywhere), prompt (where a detector flags the prompt) or "
        "text (the gates, and every masked code once a detector flags the text so far)",
    )
    mask_detect_after: int = setting(
        4, "text condition: tokens of a text (after BOS) its detector reads before it may flag the text"
    )
    skip_first_token: bool = setting(True, "leave position 0 alone: it is always BOS and carries no content")
    chunk_tokens: int = setting(4096, "tokens per similarity chunk; memory grows as chunk_tokens x n_codes")
    chunk_codes: int = setting(0, "codes per similarity chunk, partial top-k merged; 0 compares all at once")
    # Much faster on a GPU with a large codebook; can differ from the exact top-k only where fp32 and
    # bf16 order disagree
    coarse_candidates: int = setting(
        0, ">0: rank codes in bf16, re-rank this many candidates in fp32; 0 ranks all in fp32"
    )
    # "grouped" scores a fraction of the FLOPs at large C; it can differ from exact
    # (bench/bench_search_quality.py)
    search: str = setting(
        "exact", "exact scores every code; grouped scores the codes of each token's best groups only"
    )
    search_groups: int = setting(
        0, "grouped search: balanced code groups; 0 is the power of two nearest sqrt(n_codes)"
    )
    search_probes: int = setting(8, "grouped search: the best groups whose codes each token scores")

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
        if self.mask_condition in DETECTOR_CONDITIONS and self.mask_policy != "zero":
            raise ConfigError(
                f"bottleneck.mask_condition={self.mask_condition} empties code slots, but bottleneck."
                f"mask_policy={self.mask_policy!r}: set bottleneck.mask_policy=zero, or "
                "bottleneck.mask_condition=none"
            )
        if self.mask_detect_after < 1:
            raise ConfigError(
                f"bottleneck.mask_detect_after={self.mask_detect_after}: use 1 or more (tokens a text's "
                "detector reads before it may flag the text)"
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
    def reads_detectors(self) -> bool:
        """Whether the mask acts by its topic detectors (mask_condition prompt or text)."""
        return self.mask_condition in DETECTOR_CONDITIONS

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
    """Codebook training: which weights learn, on what, for how long."""

    mode: str = setting("above", "what trains: frozen (bottleneck only), above (+ layers above it) or joint")
    max_examples: int = setting(12000, "training texts drawn from the train split")
    epochs: float = setting(1.0, "passes over the training texts")
    batch_size: int = setting(16, "texts per training step")
    lr: float = setting(1e-3, "bottleneck learning rate (codes are unit vectors)")
    base_lr: float = setting(2e-4, "learning rate of base-model weights in modes above and joint")
    weight_decay: float = setting(0.0, "AdamW weight decay")
    recon_coef: float = setting(0.1, "weight of the bottleneck's reconstruction loss")
    init: str = setting("kmeans", "how codes start from real activations: kmeans or sample")
    init_vectors: int = setting(
        12288, "activations sampled for code initialisation (k-means cost grows with it)"
    )
    kmeans_iters: int = setting(5, "k-means iterations of the code initialisation")
    reseed_every: int = setting(50, "steps between dead-code re-seeding; 0 turns it off")
    checkpoint_every: int = setting(100, "steps between training checkpoints")
    seed: int = setting(0, "seed of the batch order, the code initialisation and dead-code re-seeding")
    # The bottleneck stays eager; off by default: the first compile takes tens of seconds (about 40 s
    # on a 2-core CPU)
    compile: bool = setting(False, "torch.compile each decoder layer's forward, meant for GPU runs")
    precision: str = setting(
        "auto", "auto (bf16 autocast where the device multiplies bf16 natively, else fp32), fp32 or bf16"
    )
    # So that the codes also cover text the model meets outside the corpus: debian-handbook is the
    # English Debian Administrator's Handbook, which the general-text probe never reads
    general_text: str = setting(
        "",
        "prose mixed into training: '' (none), debian-handbook, or a file of passages split by blank lines",
    )
    general_fraction: float = setting(0.25, "share of max_examples drawn from general_text (when it is set)")
    # The gold standard an unlearning method is measured against: the model retrained without the
    # topic (scripts/retrain_reference.py compares it with a mask)
    exclude_labels: tuple[str, ...] = setting(
        (), "labels whose train-split texts training leaves out (a leave-topic-out reference model)"
    )
    # Gradient routing on the codebook (codeunlearn/training/code_routes.py): each label keeps codes
    # of its own, so that a label's mask need not take codes its neighbours share
    route_codes: int = setting(
        0, "codes reserved per label: a label's texts train on them and the shared ones only (0: off)"
    )
    route_min_examples: int = setting(
        150, "labels with at least this many examples (train and test sides) reserve route_codes codes"
    )
    # Serving chooses among all codes: without this loss a routed label's tokens are served another
    # label's reserved codes (measured on GCIDE: 47% of Bot.'s slots); weight 1 at margin 0.05 pushed
    # the reserved codes out of every token's reach (docs/results/sweep.md, variant 4)
    route_coef: float = setting(
        0.1, "weight of the loss that keeps codes a token may not choose out of its top k when served"
    )
    route_margin: float = setting(
        0.0, "cosine margin by which those codes must fall below the k-th chosen one"
    )

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
        if self.precision not in ("auto", "fp32", "bf16"):
            raise ConfigError(f"train.precision={self.precision!r}: use 'auto', 'fp32' or 'bf16'")
        if self.init not in ("kmeans", "sample"):
            raise ConfigError(f"train.init={self.init!r}: use 'kmeans' or 'sample'")
        if self.route_coef < 0 or self.route_margin < 0:
            raise ConfigError(
                f"train.route_coef={self.route_coef}, train.route_margin={self.route_margin}: "
                "both must be 0 or more"
            )
        if self.route_codes < 0 or self.route_min_examples < 1:
            raise ConfigError(
                f"train.route_codes={self.route_codes}, train.route_min_examples={self.route_min_examples}: "
                "set route_codes to 0 (off) or a positive count, route_min_examples to 1 or more"
            )
        if self.batch_size < 1 or self.epochs <= 0:
            raise ConfigError(
                f"train.batch_size={self.batch_size}, train.epochs={self.epochs}: both must be positive"
            )
