"""Text detectors for a sweep under bottleneck.mask_condition=text: the mean inputs of the training
texts are computed once per codebook (cached in the run's sweep directory, shared by its sweeps), so a
topic's detector costs one logistic fit, not another pass over the corpus.

A topic's detector is fitted on mining's own texts of the topic (forget_train) against the sample's
texts of other labels, leaving out the topic's validation rows, so that calibration judges the
detector on texts it never saw.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pyarrow as pa

from codeunlearn.core.config import RunConfig
from codeunlearn.data.topics import Splits
from codeunlearn.model.surgery import CodebookModel
from codeunlearn.unlearning.topic_detector import TopicDetector, fit_text_detector, prompt_features

log = logging.getLogger(__name__)


class TextFeatures:
    """Mean bottleneck inputs of training texts by id, computed on first need and cached in `path`."""

    def __init__(self, codebook_model: CodebookModel, train: pa.Table, config: RunConfig, path: Path) -> None:
        self.codebook_model = codebook_model
        self.config = config
        self.path = path
        ids = list(map(str, train.column("id").to_pylist()))
        self.texts = dict(zip(ids, train.column("text").to_pylist(), strict=True))
        self.labels = dict(zip(ids, train.column("label").to_pylist(), strict=True))
        rng = np.random.default_rng(config.seed)
        ids = sorted(ids)
        picks = rng.choice(len(ids), min(config.mining.detector_negatives, len(ids)), replace=False)
        self.negatives = [ids[i] for i in np.sort(picks)]
        self._rows: dict[str, int] = {}
        self._features = np.zeros((0, codebook_model.model.config.hidden_size), np.float32)
        if path.is_file():
            saved = np.load(path)
            self._rows = {str(i): n for n, i in enumerate(saved["ids"])}
            self._features = saved["features"]

    def of(self, ids: list[str]) -> np.ndarray:
        """The features of these training texts (N, d), computing and caching those not seen yet (with
        the whole negative sample, the first time)."""
        missing = [i for i in dict.fromkeys([*ids, *self.negatives]) if i not in self._rows]
        if missing:
            log.info("text detector: mean inputs of %d training texts", len(missing))
            new = prompt_features(
                self.codebook_model, [self.texts[i] for i in missing], self.config.data.max_length
            )
            start = len(self._rows)
            self._rows.update({i: start + n for n, i in enumerate(missing)})
            self._features = np.concatenate([self._features, new])
            self.path.parent.mkdir(parents=True, exist_ok=True)
            partial = self.path.with_suffix(".tmp.npz")
            np.savez(partial, ids=np.array(list(self._rows)), features=self._features)
            partial.replace(self.path)
        return self._features[[self._rows[i] for i in ids]]

    def fitting_ids(self, topic: str, splits: Splits) -> tuple[list[str], list[str]]:
        """The ids a topic's detector is fitted on: mining's texts of the topic, and the sample's texts
        of other labels outside the validation split."""
        held = set(map(str, splits.retain_val.column("id").to_pylist()))
        others = [i for i in self.negatives if self.labels[i] != topic and i not in held]
        return [str(i) for i in splits.forget_train.column("id").to_pylist()], others

    def detector(self, topic: str, splits: Splits) -> TopicDetector:
        """The topic's text detector at mining.detector_recall (see the module's docstring)."""
        own, others = self.fitting_ids(topic, splits)
        features = self.of(own + others)
        recall, seed = self.config.mining.detector_recall, self.config.seed
        return fit_text_detector(features[: len(own)], features[len(own) :], recall, seed=seed)
