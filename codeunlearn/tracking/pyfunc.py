"""A codebook model as an MLflow pyfunc: what every registered codebook and masked version serves.

Registered versions pickle `CodebookPyfunc` by reference as `codeunlearn.tracking.tracker.CodebookPyfunc`
(where it lived first); the tracker module re-exports it so those versions keep loading.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import mlflow

from codeunlearn.model.surgery import load_codebook_model
from codeunlearn.unlearning.masks import apply_mask, load_mask


def _codebook_directory(model_root: str) -> str:
    """Where a downloaded codebook version keeps its model directory, as its MLmodel file records."""
    import yaml

    meta = yaml.safe_load((Path(model_root) / "MLmodel").read_text())
    return str(Path(model_root) / meta["flavors"]["python_function"]["artifacts"]["codebook"]["path"])


class CodebookPyfunc(mlflow.pyfunc.PythonModel):
    """A codebook model as an MLflow pyfunc: `predict` generates text with the version's mask in force.

    Codebook versions carry the model directory; masked versions carry `mask.json` and the URI of their
    codebook version, which is fetched from the registry when loaded.
    """

    def load_context(self, context: Any) -> None:
        if "codebook" in context.artifacts:
            directory = context.artifacts["codebook"]
        else:
            directory = _codebook_directory(
                mlflow.artifacts.download_artifacts(context.model_config["codebook_uri"])
            )
        self.codebook_model = load_codebook_model(Path(directory), "cpu")
        serving = context.model_config or {}
        if "mask_policy" in serving:  # absent from versions registered before it was recorded
            bottleneck = self.codebook_model.bottleneck
            bottleneck.serve(
                dataclasses.replace(
                    bottleneck.policy,
                    mask_policy=serving["mask_policy"],
                    mask_gate=int(serving.get("mask_gate", 1)),
                    mask_context_gate=int(serving.get("mask_context_gate", 0)),
                    mask_context_after=int(serving.get("mask_context_after", 1)),
                    mask_condition=serving.get("mask_condition", "none"),
                    mask_detect_after=int(serving.get("mask_detect_after", 4)),
                )
            )
        self.mask = load_mask(Path(context.artifacts["mask"])) if "mask" in context.artifacts else None
        apply_mask(self.codebook_model, self.mask)

    # No type hints on predict: MLflow would infer a signature from them and drop the params schema.
    def predict(self, context, model_input, params=None):
        """Greedy continuations of each prompt (a list of strings or a one-column DataFrame)."""
        if hasattr(model_input, "columns"):
            column = "prompt" if "prompt" in model_input.columns else model_input.columns[0]
            model_input = model_input[column]
        max_new_tokens = int((params or {}).get("max_new_tokens", 32))
        return [self._generate(str(prompt), max_new_tokens) for prompt in model_input]

    def _generate(self, prompt: str, max_new_tokens: int) -> str:
        import torch

        tokenizer = self.codebook_model.tokenizer
        # One prompt at a time, unpadded, starting with BOS: the bottleneck skips exactly position 0.
        ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False).input_ids
        bos = tokenizer.bos_token_id
        if bos is not None and (ids.numel() == 0 or ids[0, 0] != bos):
            ids = torch.cat([torch.tensor([[bos]]), ids], dim=1)
        # The request is the prompt: under bottleneck.mask_condition=prompt its detectors decide.
        with torch.no_grad(), self.codebook_model.bottleneck.prompted():
            generated = self.codebook_model.model.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=tokenizer.pad_token_id,
            )
        return tokenizer.decode(generated[0, ids.shape[1] :], skip_special_tokens=True)
