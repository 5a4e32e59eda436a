"""What a mask did to its topic, and whether that clears the gates: the one place a mask is judged.

A `TopicOutcome` holds the mean held-out NLL (nats/token) of each variant on the topic's forget set and on
the retain set: `base` (no codebook), `codebook` (no mask), `masked` (the mined mask) and `random` (the
random-mask control: as many random codes as the mined mask, none of its own). Every caller that gates a
mask (the request processor, the tracked pipeline, the report and the certificate) builds one and asks
`failures(config.gates)`.

The normalised drops divide by the codebook model's gain over the base model; on a topic it barely
learned they are ratios of noise, so the raw nats always come with them and `min_gain` fails such a
topic outright.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from codeunlearn.core.config import GatesConfig
from codeunlearn.core.errors import CodeunlearnError
from codeunlearn.evaluation.evaluator import normalized_drop
from codeunlearn.unlearning.masks import Mask, mask_from_codes
from codeunlearn.unlearning.selection import random_codes

REQUIRED = ("base", "codebook", "masked")
VARIANTS = (*REQUIRED, "random")
# Below this (nats/token) a mined mask's rise has no share to give, and a gain nothing to normalise by
# (evaluator.normalized_drop's own cut)
_NO_RISE = 1e-6


def random_control(mask: Mask, n_select: int, seed: int) -> Mask:
    """The random-mask control of `mask`: `n_select` codes drawn with `seed` among the codes `mask` leaves
    unmasked (a draw that overlapped the mined codes would credit them to chance), as a mask named
    "random" over the same codebook, with the detector of a one-source mask."""
    excluded = np.asarray(mask.code_ids, dtype=np.int64)
    # a mask holding most of a small codebook leaves fewer codes than it mined: draw what is left
    n_select = min(n_select, mask.n_codes - len(excluded))
    codes = random_codes(mask.n_codes, n_select, seed, exclude=excluded)
    # Under mask_condition=text the mined codes act where the detector flags; random codes must be
    # given the same chance, so a mask of one detector lends it to its control.
    detectors = list(mask.detectors.values())
    detector = detectors[0] if len(detectors) == 1 and len(mask.sources) == 1 else None
    return mask_from_codes(mask.n_codes, "random", codes.tolist(), detector=detector)


@dataclass(frozen=True)
class TopicOutcome:
    """Mean held-out NLL per variant on the topic's forget set and on the retain set.

    `forget` and `retain` map variant -> NLL and hold base, codebook and masked, and random where the
    random-mask control was scored.
    """

    forget: Mapping[str, float]
    retain: Mapping[str, float]

    def __post_init__(self) -> None:
        for split in ("forget", "retain"):
            missing = [v for v in REQUIRED if v not in getattr(self, split)]
            if missing:
                raise CodeunlearnError(
                    f"the {split} set's evaluation has no {', '.join(missing)} NLL: score the base, "
                    "codebook and masked models (codeunlearn evaluate)"
                )

    @classmethod
    def from_nll(cls, nll: Mapping[str, Mapping[str, float]]) -> TopicOutcome:
        """From an evaluation's variant -> split -> NLL (EvalReport.nll, eval/report.json's `nll`), its
        "forget" and "retain" splits; variants other than base, codebook, masked and random are ignored."""
        present = [v for v in VARIANTS if v in nll]
        return cls(
            forget={v: float(nll[v]["forget"]) for v in present},
            retain={v: float(nll[v]["retain"]) for v in present},
        )

    # ------------------------------------------------------------ figures

    @property
    def forget_drop(self) -> float:
        """Normalised: 0 = the codebook model's forget NLL, 1 = the base model's; NaN without a gain."""
        return normalized_drop(self.forget["base"], self.forget["codebook"], self.forget["masked"])

    @property
    def retain_drop(self) -> float:
        """Normalised like forget_drop, on the retain set."""
        return normalized_drop(self.retain["base"], self.retain["codebook"], self.retain["masked"])

    @property
    def forget_nats(self) -> float:
        """How much the mask raises forget NLL over the codebook model, nats/token."""
        return self.forget["masked"] - self.forget["codebook"]

    @property
    def retain_nats(self) -> float:
        """How much the mask raises retain NLL over the codebook model, nats/token."""
        return self.retain["masked"] - self.retain["codebook"]

    @property
    def gain(self) -> float:
        """How much lower the codebook model's forget NLL is than the base model's, nats/token: what
        there is to forget, and the denominator of forget_drop."""
        return self.forget["base"] - self.forget["codebook"]

    @property
    def retain_gain(self) -> float:
        """The codebook model's gain over the base model on the retain set, the denominator of retain_drop."""
        return self.retain["base"] - self.retain["codebook"]

    @property
    def has_random(self) -> bool:
        return "random" in self.forget

    @property
    def random_nats(self) -> float:
        """How much the random-mask control raises forget NLL over the codebook model; NaN unscored."""
        return self.forget["random"] - self.forget["codebook"] if self.has_random else math.nan

    @property
    def random_share(self) -> float:
        """The random control's forget rise as a share of the mined mask's; NaN when the control was not
        scored or the mined mask raises forget NLL by nothing (no rise to share)."""
        rise = self.forget_nats
        if not self.has_random or not rise > _NO_RISE:
            return math.nan
        return self.random_nats / rise

    def learned(self, min_gain: float) -> bool:
        """Whether the codebook model gains at least `min_gain` nats/token on the topic (NaN: no)."""
        return self.gain >= min_gain

    # ------------------------------------------------------------ the gates

    def failures(self, gates: GatesConfig) -> list[str]:
        """Why this outcome fails `gates`, one reason per failed gate; empty when the version may be
        promoted. NaN never passes, except the random share of a mined mask that raises forget NLL by
        nothing: then the forget gate is what such a mask fails, unless it was opened on purpose."""
        reasons = []
        if not self.learned(gates.min_gain):
            reasons.append(
                f"not learned: the codebook model gains {self.gain:.3f} nats/token over the base model on "
                f"the topic (< gates.min_gain {gates.min_gain})"
            )
        reasons += _drop_failure(
            "forget", self.forget_drop, self.forget_nats, self.gain, ">=", gates.min_forget_drop
        )
        reasons += self.retain_failures(gates)
        reasons += self._random_failure(gates.max_random_share)
        return reasons

    def retain_failures(self, gates: GatesConfig) -> list[str]:
        """Why the retain set's NLL fails `gates.max_retain_drop` (the one gate a revert must clear)."""
        return _drop_failure(
            "retain", self.retain_drop, self.retain_nats, self.retain_gain, "<=", gates.max_retain_drop
        )

    def _random_failure(self, max_share: float) -> list[str]:
        if not self.has_random:
            return ["random control: no random mask of the same size was scored"]
        if not self.forget_nats > _NO_RISE:
            return []
        share = self.random_share
        if math.isnan(share):
            return [f"random control: the random mask's forget NLL is not a number ({self.random_nats})"]
        if share > max_share:
            return [
                f"random control: a random mask of the same size gives {share:.2f} of the mined mask's "
                f"forget rise (> gates.max_random_share {max_share})"
            ]
        return []

    # ------------------------------------------------------------ records

    def metrics(self, gates: GatesConfig, nll: bool = True) -> dict[str, float]:
        """A flat dict for MLflow: the drops, the raw nats, the gain, whether the topic was learned (1 or
        0), the random share and, with `nll`, every variant's NLL as `<split>_nll_<variant>`."""
        figures = {
            "forget_drop": self.forget_drop,
            "retain_drop": self.retain_drop,
            "forget_nats": self.forget_nats,
            "retain_nats": self.retain_nats,
            "gain": self.gain,
            "learned": float(self.learned(gates.min_gain)),
            "random_nats": self.random_nats,
            "random_share": self.random_share,
        }
        if not nll:
            return figures
        flat = {
            f"{split}_nll_{variant}": value
            for split in ("forget", "retain")
            for variant, value in getattr(self, split).items()
        }
        return flat | figures

    def tags(self, gates: GatesConfig) -> dict[str, str]:
        """The registry tags of the evaluated mask version: the figures, and `gates`, "passed" or the
        reasons it failed."""
        return {
            "forget_drop": f"{self.forget_drop:.4f}",
            "retain_drop": f"{self.retain_drop:.4f}",
            "forget_nats": f"{self.forget_nats:+.4f}",
            "retain_nats": f"{self.retain_nats:+.4f}",
            "gain": f"{self.gain:.4f}",
            "learned": str(self.learned(gates.min_gain)).lower(),
            "random_share": f"{self.random_share:.4f}",
            "gates": "; ".join(self.failures(gates)) or "passed",
        }

    def summary(self, gates: GatesConfig) -> str:
        """One paragraph for a report: the drops beside their raw nats, the gain, the random control,
        "not learned" where it applies."""
        text = (
            f"Normalised forget drop {self.forget_drop:.3f} ({self.forget_nats:+.4f} nats/token over the "
            f"codebook model; 1 = back to the base model, which is {self.gain:+.4f} nats/token above it), "
            f"retain drop {self.retain_drop:.3f} ({self.retain_nats:+.4f} nats/token)."
        )
        if self.has_random:
            share = self.random_share
            compared = (
                "no rise of the mined mask to compare" if math.isnan(share) else f"{share:.2f} of its rise"
            )
            text += (
                f" A random mask of the same size raises forget NLL by {self.random_nats:+.4f} nats/token, "
                f"{compared}."
            )
        if not self.learned(gates.min_gain):
            text += (
                f" Not learned: the codebook model gains {self.gain:.3f} nats/token over the base model on "
                f"the topic (gates.min_gain {gates.min_gain}), so the normalised drops divide by noise."
            )
        return text


def _drop_failure(split: str, drop: float, nats: float, gain: float, need: str, gate: float) -> list[str]:
    """The reason a normalised drop fails its gate (`need` ">=" or "<="), with its raw nats."""
    key = "min_forget_drop" if need == ">=" else "max_retain_drop"
    if math.isnan(drop):
        if math.isfinite(gain) and abs(gain) >= _NO_RISE:
            cause = "an NLL is not a number"
        else:
            cause = (
                f"the codebook model gains {gain:.4f} nats/token over the base model on the {split} set, "
                "nothing to normalise by"
            )
        return [
            f"{split} drop is not a number ({nats:+.4f} nats/token; {cause}), so it cannot clear "
            f"gates.{key} {gate}"
        ]
    passes = drop >= gate if need == ">=" else drop <= gate
    if passes:
        return []
    broken = "<" if need == ">=" else ">"
    return [f"{split} drop {drop:.3f} ({nats:+.4f} nats/token) {broken} gates.{key} {gate}"]
