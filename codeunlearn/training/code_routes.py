"""Codes reserved per label while training (train.route_codes): a text of a routed label may choose
only its label's reserved codes and the shared ones, every other text only the shared ones.

This is gradient routing (Cloud et al., 2024, "Gradient Routing: Masking Gradients to Localize
Computation in Neural Networks") on a codebook: a reserved code is trained on its label's texts
alone, and the layers above learn to read it as that label's, so masking a label's reserved codes
takes away what the model routed through them without the codes its other labels share. Serving is
unrestricted, since a served text has no label; training's route loss (train.route_coef, computed in
CodebookBottleneck.routed) keeps the codes a text may not choose out of its reach, so that serving
chooses what training did.

Shapes: B batch rows, C codes, n texts.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from codeunlearn.core.errors import ConfigError

ROUTES_FILE = "code_routes.json"
SHARED = -1  # the route id of a text of no routed label


@dataclass(frozen=True)
class CodeRoutes:
    """Label i reserves codes [i * per_label, (i + 1) * per_label); codes from len(labels) * per_label on
    are shared by every text."""

    labels: tuple[str, ...]
    per_label: int
    n_codes: int

    @classmethod
    def reserve(cls, labels: Sequence[str], per_label: int, n_codes: int, top_k: int) -> CodeRoutes:
        """Routes for `labels`, checked to leave every text at least top_k codes to choose from.

        Raises:
            ConfigError: the reserved codes leave fewer than top_k shared ones, or a label reserves
                fewer than top_k (its texts could not fill their slots from its own codes).
        """
        routes = cls(tuple(labels), per_label, n_codes)
        if per_label < top_k:
            raise ConfigError(
                f"train.route_codes={per_label} is under bottleneck.top_k={top_k}: reserve at least top_k "
                "codes per label"
            )
        if routes.n_shared < top_k:
            raise ConfigError(
                f"train.route_codes={per_label} for {len(labels)} labels reserves {routes.n_reserved} of "
                f"{n_codes} codes, leaving {routes.n_shared} shared: lower train.route_codes or raise "
                "train.route_min_examples (fewer labels)"
            )
        return routes

    @property
    def n_reserved(self) -> int:
        return len(self.labels) * self.per_label

    @property
    def n_shared(self) -> int:
        return self.n_codes - self.n_reserved

    def reserved(self, label: str) -> range:
        """The code ids `label` reserves."""
        start = self.labels.index(label) * self.per_label
        return range(start, start + self.per_label)

    def route_ids(self, text_labels: Sequence[str | None]) -> torch.Tensor:
        """Each text's route (n,) int64: its label's index, or SHARED."""
        index = {label: i for i, label in enumerate(self.labels)}
        return torch.tensor([index.get(label, SHARED) for label in text_labels], dtype=torch.long)

    def allowed(self, route_ids: torch.Tensor) -> torch.Tensor:
        """(B, C) bool: the codes each row of routes (B,) may choose."""
        code_route = self.code_routes().to(route_ids.device)  # (C,)
        return (code_route == SHARED) | (code_route.unsqueeze(0) == route_ids.unsqueeze(1))

    def code_routes(self) -> torch.Tensor:
        """(C,) int64: the label index each code is reserved for, SHARED for a shared code."""
        route = torch.full((self.n_codes,), SHARED, dtype=torch.long)
        route[: self.n_reserved] = torch.arange(len(self.labels)).repeat_interleave(self.per_label)
        return route

    def save(self, model_dir: Path) -> None:
        """Write which codes each label reserved beside the model (for audits; serving never reads it)."""
        reserved = {label: [self.reserved(label).start, self.reserved(label).stop] for label in self.labels}
        payload = {"per_label": self.per_label, "n_codes": self.n_codes, "reserved": reserved}
        (model_dir / ROUTES_FILE).write_text(json.dumps(payload, indent=1) + "\n")


@dataclass(frozen=True)
class TextRoutes:
    """The routes of the training texts, by their position in the training list."""

    routes: CodeRoutes
    route_ids: torch.Tensor  # (n,) int64

    def allowed(self, rows: torch.Tensor) -> torch.Tensor:
        """(B, C) bool: the codes a batch of rows (B,) (positions in the training list) may choose."""
        return self.routes.allowed(self.route_ids[rows.cpu()])
