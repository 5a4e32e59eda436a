"""Training checkpoints: the trained weights, the optimizer and the training state, saved every few
steps, and the resume that restores them so an interrupted run continues where it stopped.

Only weights that train are saved; frozen ones are the base model's and come back with it.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

from codeunlearn.model.surgery import CodebookModel
from codeunlearn.training.train_state import _TrainState

log = logging.getLogger(__name__)


def _trainable_state(codebook_model: CodebookModel, use_bottleneck: bool) -> dict[str, torch.Tensor]:
    """Trained model weights (`model.` keys) and, with use_bottleneck, the bottleneck's (`bottleneck.`)."""
    state = {f"model.{n}": p.detach() for n, p in codebook_model.model.named_parameters() if p.requires_grad}
    if use_bottleneck:
        state.update({f"bottleneck.{n}": t for n, t in codebook_model.bottleneck.state_dict().items()})
    return state


def save_checkpoint(
    codebook_model: CodebookModel,
    optimizer: torch.optim.Optimizer,
    state: _TrainState,
    directory: Path,
    use_bottleneck: bool,
) -> None:
    """Write `directory/checkpoint.pt`, replacing the last one only once the new one is whole."""
    directory.mkdir(parents=True, exist_ok=True)
    state.flush()
    payload = {
        "step": state.step,
        "usage": state.usage.cpu(),
        "history": state.history,
        "weights": _trainable_state(codebook_model, use_bottleneck),
        "optimizer": optimizer.state_dict(),
    }
    partial = directory / "checkpoint.pt.partial"
    torch.save(payload, partial)
    os.replace(partial, directory / "checkpoint.pt")  # a crash mid-write never corrupts the last checkpoint


def resume_checkpoint(
    codebook_model: CodebookModel,
    optimizer: torch.optim.Optimizer,
    state: _TrainState,
    directory: Path,
    use_bottleneck: bool,
) -> None:
    """Load `directory/checkpoint.pt` into the model, optimizer and state, if there is one."""
    path = directory / "checkpoint.pt"
    if not path.is_file():
        return
    payload = torch.load(path, map_location=codebook_model.device, weights_only=False)
    weights = payload["weights"]
    model_state = {k.removeprefix("model."): v for k, v in weights.items() if k.startswith("model.")}
    codebook_model.model.load_state_dict(model_state, strict=False)
    if use_bottleneck:
        codebook_model.bottleneck.load_state_dict(
            {k.removeprefix("bottleneck."): v for k, v in weights.items() if k.startswith("bottleneck.")}
        )
    optimizer.load_state_dict(payload["optimizer"])
    state.step, state.history = payload["step"], payload["history"]
    state.usage = payload["usage"].to(state.usage.device)
    log.info("resumed training from %s at step %d", path, state.step)
