"""Masks: versioned sets of disabled code ids that compose by union and can be taken apart again."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from codeunlearn.core.config import DETECTOR_CONDITIONS
from codeunlearn.core.errors import CodeunlearnError
from codeunlearn.core.file_lock import write_durably
from codeunlearn.model.surgery import CodebookModel
from codeunlearn.unlearning.topic_detector import TopicDetector

if TYPE_CHECKING:
    import pyarrow as pa


@dataclass(frozen=True)
class MaskSource:
    """One reason codes are masked: a request or topic, the codes it chose, and where they came from."""

    name: str  # request id or topic name
    code_ids: tuple[int, ...]
    rule: str = ""
    data_hash: str = ""  # content hash of the forget set the codes were mined on
    counts_run: str = ""  # code-store run holding the counts
    # the topic's prompt detector (mining.detector_recall), read under bottleneck.mask_condition=prompt
    detector: TopicDetector | None = None


@dataclass(frozen=True)
class Mask:
    """The union of its sources' codes over a codebook of `n_codes` codes."""

    n_codes: int
    sources: tuple[MaskSource, ...] = field(default=())

    @property
    def code_ids(self) -> tuple[int, ...]:
        return tuple(sorted({code for source in self.sources for code in source.code_ids}))

    @property
    def detectors(self) -> dict[str, TopicDetector]:
        """The sources' prompt detectors by source name (sources without one left out)."""
        return {source.name: source.detector for source in self.sources if source.detector is not None}

    @property
    def digest(self) -> str:
        """sha256 of the sorted code ids and codebook size, and of the prompt detectors where the
        sources carry any: equal masks have equal digests."""
        content: dict = {"n_codes": self.n_codes, "code_ids": self.code_ids}
        if self.detectors:  # absent otherwise, so masks without detectors keep their digests
            content["detectors"] = {name: d.digest for name, d in sorted(self.detectors.items())}
        return hashlib.sha256(json.dumps(content).encode()).hexdigest()

    def union(self, other: Mask) -> Mask:
        """Both masks' sources; a source already present by name is kept once."""
        if other.n_codes != self.n_codes:
            raise CodeunlearnError(
                f"cannot combine a mask over {self.n_codes} codes with one over {other.n_codes}: "
                "they belong to different codebooks"
            )
        names = {source.name for source in self.sources}
        return Mask(self.n_codes, self.sources + tuple(s for s in other.sources if s.name not in names))

    def without(self, name: str) -> Mask:
        """The mask with source `name` removed; codes other sources also chose stay masked."""
        if name not in {source.name for source in self.sources}:
            known = ", ".join(source.name for source in self.sources) or "none"
            raise CodeunlearnError(f"mask has no source named {name!r}; its sources: {known}")
        return Mask(self.n_codes, tuple(s for s in self.sources if s.name != name))


def mask_from_codes(
    n_codes: int,
    name: str,
    code_ids: list[int] | tuple[int, ...],
    detector: TopicDetector | None = None,
    **provenance: str,
) -> Mask:
    """A one-source mask; ids are checked against the codebook size."""
    ids = tuple(sorted({int(c) for c in code_ids}))
    if ids and (ids[0] < 0 or ids[-1] >= n_codes):
        raise CodeunlearnError(f"code ids must lie in [0, {n_codes}); got {ids[0]}..{ids[-1]}")
    return Mask(n_codes, (MaskSource(name, ids, detector=detector, **provenance),))


def apply_mask(codebook_model: CodebookModel, mask: Mask | None) -> None:
    """Put `mask` in force (None clears it). No weight changes; takes effect on the next forward."""
    bottleneck = codebook_model.bottleneck
    if mask is not None and mask.n_codes != bottleneck.n_codes:
        raise CodeunlearnError(
            f"mask is over {mask.n_codes} codes but the model's codebook has {bottleneck.n_codes}"
        )
    if mask is not None and bottleneck.policy.mask_condition in DETECTOR_CONDITIONS:
        check_detectors(mask, bottleneck.policy.mask_condition)
    bottleneck.set_masked(torch.tensor(mask.code_ids if mask else [], dtype=torch.long))
    bottleneck.set_detectors([d.as_linear() for d in mask.detectors.values()] if mask else [])


def check_detectors(mask: Mask, condition: str = "prompt") -> None:
    """Refuse a mask for mask_condition=prompt or text (`condition`) unless every source carries a
    detector: a source without one would act only where another source's detector flags. A mask with
    no detector at all passes (the gates alone: scored on text without prompts, as evaluation's sweeps
    are, or a random-mask control); a prompted forward refuses it (CodebookBottleneck).

    Raises:
        CodeunlearnError: some sources carry a detector and some do not.
    """
    missing = [source.name for source in mask.sources if source.detector is None]
    if missing and len(missing) < len(mask.sources):
        raise CodeunlearnError(
            f"bottleneck.mask_condition={condition}, but mask source(s) {', '.join(missing)} carry no "
            "topic detector: mine them with mining.detector_recall > 0 and unlearn again, or use "
            "bottleneck.mask_condition=none"
        )


def save_mask(mask: Mask, path: Path, notes: dict[str, str] | None = None) -> None:
    """Write the mask as JSON, atomically and durably (see `write_durably`); `notes` are kept beside it
    (read them with `mask_notes`)."""
    payload = {
        "n_codes": mask.n_codes,
        "digest": mask.digest,
        "code_ids": list(mask.code_ids),
        "sources": [
            {
                "name": s.name,
                "code_ids": list(s.code_ids),
                "rule": s.rule,
                "data_hash": s.data_hash,
                "counts_run": s.counts_run,
                **({"detector": asdict(s.detector)} if s.detector is not None else {}),
            }
            for s in mask.sources
        ],
        **({"notes": notes} if notes else {}),
    }
    write_durably(Path(path), json.dumps(payload, indent=2))


def load_mask(path: Path) -> Mask:
    """Read a mask written by `save_mask`, checking its digest."""
    if not Path(path).is_file():
        raise CodeunlearnError(f"no mask at {path}: run `codeunlearn unlearn` first or pass an existing mask")
    payload = json.loads(Path(path).read_text())
    sources = tuple(
        MaskSource(
            s["name"],
            tuple(s["code_ids"]),
            s.get("rule", ""),
            s.get("data_hash", ""),
            s.get("counts_run", ""),
            TopicDetector.from_dict(s["detector"]) if "detector" in s else None,
        )
        for s in payload["sources"]
    )
    mask = Mask(int(payload["n_codes"]), sources)
    if payload.get("digest") not in (None, mask.digest):
        raise CodeunlearnError(
            f"mask {path} does not match its recorded digest: the file was edited or corrupted"
        )
    return mask


def mask_notes(path: Path) -> dict[str, str]:
    """The notes `save_mask` kept beside a mask (none: empty)."""
    return dict(json.loads(Path(path).read_text()).get("notes", {}))


def mask_rows(mask: Mask, version: str, codebook_version: str) -> pa.Table:
    """The code store's `mask_codes` rows of a registered mask version: one per (source, code)."""
    import pyarrow as pa  # the code store's format; masks themselves need only torch

    rows = [(source.name, code) for source in mask.sources for code in source.code_ids]
    return pa.table(
        {
            "mask_digest": [mask.digest] * len(rows),
            "mask_version": [version] * len(rows),
            "codebook_version": [codebook_version] * len(rows),
            "source": [name for name, _ in rows],
            "code_id": [code for _, code in rows],
            "created_at": [datetime.now(UTC)] * len(rows),
        }
    )
