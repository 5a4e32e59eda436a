"""Converting the offline default model into the cache when another job got there first."""

import importlib.util
from pathlib import Path

from codeunlearn.model import assets


def test_conversion_that_loses_the_race_keeps_the_winners_copy(tmp_path, monkeypatch):
    monkeypatch.setenv("CODEUNLEARN_CACHE", str(tmp_path))
    gguf_dir = Path(importlib.util.find_spec(assets.SMOLLM2_PACKAGE).origin).parent
    target = tmp_path / "models" / assets.SMOLLM2_ALIAS
    target.mkdir(parents=True)
    (target / "model.safetensors").write_bytes(b"the other job's copy")

    assets._convert_gguf(gguf_dir, assets.SMOLLM2_GGUF, target)

    assert (target / "model.safetensors").read_bytes() == b"the other job's copy"
    assert sorted(p.name for p in target.parent.iterdir()) == [assets.SMOLLM2_ALIAS]
