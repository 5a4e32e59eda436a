"""Putting a bottleneck into a pretrained model, running the parts below and above it, saving, loading.

Architecture differences are data: `ARCHITECTURES` maps a transformers `model_type` to where its
decoder layers live and whether it adds learned position embeddings to `inputs_embeds`.
For encoder-decoders (T5) the layer list is the encoder's blocks, and the bottleneck replaces the
output of a sublayer inside the block (`site`): the paper's site, after the self-attention residual add.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from codeunlearn.core.config import REMOVED_SETTINGS, BottleneckConfig, removed_in_effect
from codeunlearn.core.errors import CodeunlearnError
from codeunlearn.model.bottleneck import BottleneckOutput, CodebookBottleneck

log = logging.getLogger(__name__)

FORMAT_VERSION = 1


@dataclass(frozen=True)
class Architecture:
    layers: str  # dotted path of the decoder layer list
    final_norm: str  # dotted path of the norm applied after the last layer
    position_embeddings: str | None = None  # learned positions added to inputs_embeds (GPT-2)
    site: str | None = None  # sublayer of a layer whose output is replaced; None: the whole layer
    after_site: tuple[str, ...] = ()  # modules above the site besides later layers (for mode `above`)
    is_encoder_decoder: bool = False


ARCHITECTURES: dict[str, Architecture] = {
    "llama": Architecture("model.layers", "model.norm"),
    "mistral": Architecture("model.layers", "model.norm"),
    "qwen2": Architecture("model.layers", "model.norm"),
    "qwen3": Architecture("model.layers", "model.norm"),
    "gpt2": Architecture("transformer.h", "transformer.ln_f", position_embeddings="transformer.wpe"),
}
# T5 blocks are [self-attention, (cross-attention,) feed-forward] sublayers, each adding its residual;
# `layer.0`'s output is the hidden state right after the self-attention residual add.
_T5 = Architecture(
    "encoder.block",
    "encoder.final_layer_norm",
    site="layer.0",
    after_site=("decoder", "lm_head"),
    is_encoder_decoder=True,
)
ARCHITECTURES.update({"t5": _T5, "mt5": _T5})


def architecture_of(model: nn.Module) -> Architecture:
    model_type = model.config.model_type
    if model_type not in ARCHITECTURES:
        raise CodeunlearnError(
            f"model_type {model_type!r} is not supported yet; supported: {', '.join(sorted(ARCHITECTURES))}"
        )
    return ARCHITECTURES[model_type]


def _resolve(model: nn.Module, path: str) -> Any:
    node: Any = model
    for part in path.split("."):
        node = getattr(node, part)
    return node


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    return _resolve(model, architecture_of(model).layers)


def site_module(model: nn.Module, layer: int) -> nn.Module:
    """The module whose output the bottleneck replaces: layer `layer`, or its `site` sublayer (T5)."""
    module = decoder_layers(model)[layer]
    site = architecture_of(model).site
    return _resolve(module, site) if site else module


def modules_above(model: nn.Module, layer: int) -> list[nn.Module]:
    """Everything downstream of the site: what mode `above` trains.

    Decoder-only: the later decoder layers and the final norm. T5: the rest of the site's block
    (its feed-forward sublayer), the later encoder blocks, the encoder's final norm and the decoder.
    """
    arch = architecture_of(model)
    rest_of_block: list[nn.Module] = []
    if arch.site:
        parent_path, _, index = arch.site.rpartition(".")
        rest_of_block = list(_resolve(decoder_layers(model)[layer], parent_path))[int(index) + 1 :]
    return [
        *rest_of_block,
        *list(decoder_layers(model))[layer + 1 :],
        _resolve(model, arch.final_norm),
        *(_resolve(model, path) for path in arch.after_site),
    ]


@dataclass
class Site:
    """Per-model switches read by the bottleneck hook; changed only through the context managers below."""

    enabled: bool = True
    recorded: list[BottleneckOutput] | None = None


@dataclass
class CodebookModel:
    """A pretrained LM with a codebook bottleneck at one site: a decoder layer's residual output
    (causal LMs) or an encoder block's self-attention output (T5)."""

    model: nn.Module
    tokenizer: Any
    bottleneck: CodebookBottleneck
    layer: int
    base_name: str
    site: Site = field(default_factory=Site)
    _handle: Any = None

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device


def insert_bottleneck(
    model: nn.Module, tokenizer: Any, config: BottleneckConfig, base_name: str
) -> CodebookModel:
    """Attach a new bottleneck after decoder layer `config.layer` through a forward hook.

    Raises:
        ConfigError: the layer index is outside the model, or k > C.
    """
    layers = decoder_layers(model)
    config.validate(n_layers=len(layers))
    bottleneck = CodebookBottleneck(model.config.hidden_size, config).to(next(model.parameters()).device)
    codebook_model = CodebookModel(model, tokenizer, bottleneck, config.layer, base_name)
    _attach(codebook_model)
    return codebook_model


def _attach(codebook_model: CodebookModel) -> None:
    site, bottleneck = codebook_model.site, codebook_model.bottleneck

    def hook(_module: nn.Module, _inputs: Any, kwargs: dict[str, Any], output: Any) -> Any:
        if not site.enabled:
            return output
        # Llama and GPT-2 layers return a Tensor in transformers 5; older versions and T5 a tuple.
        hidden = output[0] if isinstance(output, tuple) else output
        result = bottleneck(hidden, kwargs.get("position_ids"))
        if site.recorded is not None:
            site.recorded.append(result)
        return (result.hidden, *output[1:]) if isinstance(output, tuple) else result.hidden

    module = site_module(codebook_model.model, codebook_model.layer)
    codebook_model._handle = module.register_forward_hook(hook, with_kwargs=True)


def remove_bottleneck(codebook_model: CodebookModel) -> nn.Module:
    """Detach the bottleneck hook for good and return the plain model (e.g. the fine-tuned reference)."""
    if codebook_model._handle is not None:
        codebook_model._handle.remove()
        codebook_model._handle = None
    return codebook_model.model


@contextlib.contextmanager
def bypassed(codebook_model: CodebookModel) -> Iterator[None]:
    """Run the model as if no bottleneck were there (the base model, for frozen lower/upper weights)."""
    previous = codebook_model.site.enabled
    codebook_model.site.enabled = False
    try:
        yield
    finally:
        codebook_model.site.enabled = previous


@contextlib.contextmanager
def recording(codebook_model: CodebookModel) -> Iterator[list[BottleneckOutput]]:
    """Collect every BottleneckOutput produced inside the block (code ids, reconstruction terms)."""
    outputs: list[BottleneckOutput] = []
    codebook_model.site.recorded = outputs
    try:
        yield outputs
    finally:
        codebook_model.site.recorded = None


@contextlib.contextmanager
def only_layers(model: nn.Module, start: int, stop: int) -> Iterator[None]:
    """Temporarily keep decoder layers [start, stop) so a forward pass computes just those."""
    arch = architecture_of(model)
    parent_path, _, attr = arch.layers.rpartition(".")
    parent = _resolve(model, parent_path)
    full = getattr(parent, attr)
    setattr(parent, attr, nn.ModuleList(list(full)[start:stop]))
    try:
        yield
    finally:
        setattr(parent, attr, full)


def forward_to_site(
    codebook_model: CodebookModel, input_ids: torch.Tensor, attention_mask: torch.Tensor
) -> tuple[torch.Tensor, BottleneckOutput | None]:
    """Run layers 0..layer only; return the layer's residual output before the bottleneck (B, T, d)
    and, when the bottleneck is enabled, its output for that hidden state."""
    model, layer = codebook_model.model, codebook_model.layer
    # prepend: the residual as the layer made it, before the bottleneck's hook replaces it
    with (
        _captured_output(site_module(model, layer), prepend=True) as captured,
        only_layers(model, 0, layer + 1),
        recording(codebook_model) as outputs,
    ):
        if architecture_of(model).is_encoder_decoder:
            model.get_encoder()(input_ids=input_ids, attention_mask=attention_mask)
        else:
            _base_model(model)(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
    return captured[0], (outputs[0] if outputs else None)


@contextlib.contextmanager
def _captured_output(module: nn.Module, prepend: bool = False) -> Iterator[list[torch.Tensor]]:
    """Collect `module`'s output hidden state (the first element of a tuple output) on each call."""
    captured: list[torch.Tensor] = []

    def grab(_module: nn.Module, _inputs: Any, output: Any) -> None:
        captured.append(output[0] if isinstance(output, tuple) else output)

    handle = module.register_forward_hook(grab, prepend=prepend)
    try:
        yield captured
    finally:
        handle.remove()


def residual_after(
    model: nn.Module, layer: int, input_ids: torch.Tensor, attention_mask: torch.Tensor
) -> torch.Tensor:
    """The residual stream decoder layer `layer` outputs (B, T, d), running layers 0..layer only.

    For methods that act on one layer's activations (RMU); gradients flow as in a full forward.
    """
    with _captured_output(decoder_layers(model)[layer]) as captured, only_layers(model, 0, layer + 1):
        _base_model(model)(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
    return captured[0]


def forward_from_site(
    codebook_model: CodebookModel, hidden: torch.Tensor, attention_mask: torch.Tensor
) -> torch.Tensor:
    """Run the layers above the bottleneck layer and the LM head on `hidden` (B, T, d); logits (B, T, V).

    `hidden` must already be the bottleneck's output (or the raw residual, for the base model).
    """
    return upper_logits(codebook_model.model, codebook_model.layer, hidden, attention_mask)


def upper_logits(
    model: nn.Module, layer: int, hidden: torch.Tensor, attention_mask: torch.Tensor
) -> torch.Tensor:
    """Logits (B, T, V) of any causal LM of a supported architecture run from decoder layer `layer`'s
    output `hidden` (B, T, d): the layers above it and the LM head only."""
    arch = architecture_of(model)
    if arch.is_encoder_decoder:
        raise CodeunlearnError(
            f"{model.config.model_type} is an encoder-decoder: its site sits inside an encoder block, so "
            "there is no upper half to run alone; use full forwards (codeunlearn.translation.seq2seq)"
        )
    inputs_embeds = hidden
    if arch.position_embeddings is not None:
        # GPT-2 adds learned positions to inputs_embeds; remove them in advance so they cancel.
        positions = torch.arange(hidden.shape[1], device=hidden.device)
        inputs_embeds = hidden - _resolve(model, arch.position_embeddings)(positions)
    with only_layers(model, layer + 1, len(decoder_layers(model))):
        return model(inputs_embeds=inputs_embeds, attention_mask=attention_mask, use_cache=False).logits


def _base_model(model: nn.Module) -> nn.Module:
    return getattr(model, model.base_model_prefix)


def save_codebook_model(codebook_model: CodebookModel, directory: Path) -> None:
    """Write base weights (save_pretrained), bottleneck weights and mask (safetensors) and config (JSON):
    the bottleneck's build config with the serving policy in force in place of its own.

    The directory is written beside the target and renamed into place, so it is never half-written.
    """
    from safetensors.torch import save_file

    directory = Path(directory)
    partial = directory.with_name(directory.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    codebook_model.model.save_pretrained(partial / "base")
    codebook_model.tokenizer.save_pretrained(partial / "base")
    bottleneck = codebook_model.bottleneck
    state = {k: v.detach().contiguous().cpu() for k, v in bottleneck.state_dict().items()}
    save_file(state, partial / "bottleneck.safetensors")
    meta = {
        "format_version": FORMAT_VERSION,
        "base_name": codebook_model.base_name,
        "layer": codebook_model.layer,
        "hidden_dim": bottleneck.hidden_dim,
        # the policy it serves under, so that a loaded copy serves as this one does until told otherwise
        "bottleneck": dataclasses.asdict(bottleneck.policy.applied_to(bottleneck.config)),
        "masked_codes": torch.nonzero(bottleneck.mask).flatten().tolist(),
    }
    (partial / "codebook_config.json").write_text(json.dumps(meta, indent=2))
    if directory.exists():
        shutil.rmtree(directory)
    partial.replace(directory)


def load_codebook_model(directory: Path, device: str = "cpu") -> CodebookModel:
    """Rebuild a CodebookModel saved by `save_codebook_model`, mask included.

    Raises:
        CodeunlearnError: the directory does not hold a saved codebook model, or holds one built with a
            setting since removed (see `saved_bottleneck_config`).
    """
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

    directory = Path(directory)
    meta_path = directory / "codebook_config.json"
    if not meta_path.is_file():
        raise CodeunlearnError(
            f"{directory} holds no codebook model (no codebook_config.json): run `codeunlearn train` first"
        )
    meta = json.loads(meta_path.read_text())
    config = saved_bottleneck_config(meta["bottleneck"], directory)
    is_seq2seq = AutoConfig.from_pretrained(directory / "base").is_encoder_decoder
    auto_class = AutoModelForSeq2SeqLM if is_seq2seq else AutoModelForCausalLM
    model = auto_class.from_pretrained(directory / "base", dtype="float32").to(device).eval()
    tokenizer = AutoTokenizer.from_pretrained(directory / "base")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    codebook_model = insert_bottleneck(model, tokenizer, config, meta["base_name"])
    codebook_model.bottleneck.load_state_dict(load_file(directory / "bottleneck.safetensors", device=device))
    return codebook_model


def saved_bottleneck_config(saved: dict[str, Any], directory: Path) -> BottleneckConfig:
    """The BottleneckConfig of a saved model's `codebook_config.json`. Settings removed since it was
    saved are dropped where they held what the code does now.

    Raises:
        CodeunlearnError: the model was built with a removed setting in effect (the SAE variant).
    """
    removed = REMOVED_SETTINGS["bottleneck"]
    in_effect = removed_in_effect("bottleneck", saved)
    if in_effect:
        named = ", ".join(f"bottleneck.{key}={saved[key]!r}" for key in in_effect)
        raise CodeunlearnError(
            f"{directory} holds a model built with {named}, which was removed "
            f"({removed[in_effect[0]].reason}): train the model again (`codeunlearn train`), or load it "
            f"with an older release of codeunlearn (git log -S {in_effect[0]})"
        )
    return BottleneckConfig(
        **{k: tuple(v) if isinstance(v, list) else v for k, v in saved.items() if k not in removed}
    )


def weights_hash(model_dir: Path) -> str:
    """sha256 over every weight file of the saved codebook model (the bottleneck and the base model's
    weights, which training may change), by relative path in order."""
    digest = hashlib.sha256()
    for path in sorted(Path(model_dir).rglob("*.safetensors")):
        digest.update(str(path.relative_to(model_dir)).encode())
        with path.open("rb") as handle:
            for block in iter(lambda handle=handle: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()
