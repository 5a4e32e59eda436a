"""Translation with a codebook model: encoding pairs, training on the target tokens, greedy decoding.

Two forms, one interface (the HF `labels` convention, -100 where no loss is taken):
- encoder-decoder (T5): the encoder reads `t5_prefix + source`, the decoder is trained on the target;
- causal LM (SmolLM2, Llama, GPT-2): BOS + `prompt(source)` then ` target` + EOS, loss on the target only.

Training always runs whole forwards (the T5 site sits inside an encoder block, so there is no upper half
to run alone); it reuses the parameter groups, code initialisation and dead-code re-seeding of
`codeunlearn.training.trainer`.
"""

from __future__ import annotations

import contextlib
import logging
import math
import re
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from codeunlearn.core.config import TrainConfig, TranslationConfig
from codeunlearn.core.progress import progress
from codeunlearn.data.batching import Batch, bos_id, make_batches
from codeunlearn.data.positions import Span, token_flags
from codeunlearn.model.surgery import CodebookModel, recording, site_module
from codeunlearn.training.code_start import init_codes
from codeunlearn.training.trainer import (
    TrainResult,
    _batch_order,
    _schedule,
    _StepOutput,
    _TrainState,
    content_sum,
    counted_codes,
    site_activations,
    trainable_parameters,
)

log = logging.getLogger(__name__)

IGNORE = -100  # label id the HF losses skip


@dataclass
class TranslationBatch:
    """Right-padded inputs and labels; `rows` index the examples in the input lists."""

    input_ids: torch.Tensor  # (B, T) int64
    attention_mask: torch.Tensor  # (B, T) int64
    labels: torch.Tensor  # (B, T) causal LM, (B, T_target) seq2seq; IGNORE where no loss
    rows: torch.Tensor  # (B,) int64

    def to(self, device: str | torch.device) -> TranslationBatch:
        return TranslationBatch(
            self.input_ids.to(device), self.attention_mask.to(device), self.labels.to(device), self.rows
        )

    @property
    def n_tokens(self) -> int:
        return int(self.attention_mask.sum())


def is_seq2seq(model: torch.nn.Module) -> bool:
    return bool(getattr(model.config, "is_encoder_decoder", False))


def source_ids(tokenizer: Any, sources: Sequence[str], config: TranslationConfig, seq2seq: bool) -> list:
    """Token ids of what the model reads before translating: T5 prefix + source (+ EOS), or BOS + prompt."""
    names = {"source_name": config.source_name, "target_name": config.target_name}
    if seq2seq:
        prefix = config.t5_prefix.format(**names)
        encoded = tokenizer([prefix + s for s in sources], add_special_tokens=False)["input_ids"]
        return [[*ids, tokenizer.eos_token_id] for ids in encoded]
    prompts = [config.prompt.format(source=s, **names) for s in sources]
    encoded = tokenizer(prompts, add_special_tokens=False)["input_ids"]
    return [[bos_id(tokenizer), *ids] for ids in encoded]


def target_ids(tokenizer: Any, targets: Sequence[str], config: TranslationConfig, seq2seq: bool) -> list:
    """Token ids the model is trained to produce: the target (space-led after a prompt) and EOS."""
    texts = list(targets) if seq2seq else [" " + t for t in targets]
    encoded = tokenizer(texts, add_special_tokens=False)["input_ids"]
    return [[*ids[: config.max_target_tokens - 1], tokenizer.eos_token_id] for ids in encoded]


def translation_batches(
    tokenizer: Any,
    sources: Sequence[str],
    targets: Sequence[str],
    config: TranslationConfig,
    seq2seq: bool,
    batch_size: int,
) -> list[TranslationBatch]:
    """Training batches of similar length (sorted by total length, so padding stays small)."""
    src, tgt = (
        source_ids(tokenizer, sources, config, seq2seq),
        target_ids(tokenizer, targets, config, seq2seq),
    )
    order = sorted(range(len(src)), key=lambda row: (len(src[row]) + len(tgt[row]), row))
    pad = tokenizer.pad_token_id
    batches = []
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        if seq2seq:
            inputs, labels = [src[r] for r in rows], [tgt[r] for r in rows]
        else:
            inputs = [src[r] + tgt[r] for r in rows]
            labels = [[IGNORE] * len(src[r]) + tgt[r] for r in rows]
        input_ids, attention_mask = _pad(inputs, pad)
        batches.append(
            TranslationBatch(input_ids, attention_mask, _pad(labels, IGNORE)[0], torch.tensor(rows))
        )
    return batches


def source_flags(
    tokenizer: Any,
    sources: Sequence[str],
    spans: Sequence[Sequence[Span]],
    config: TranslationConfig,
    seq2seq: bool,
) -> list[list[bool]]:
    """Per token of `source_ids`, True where it overlaps one of the source's character `spans`."""
    names = {"source_name": config.source_name, "target_name": config.target_name}
    if seq2seq:
        lead = config.t5_prefix.format(**names)
        texts = [lead + s for s in sources]
    else:
        lead = config.prompt.split("{source}")[0].format(**names)
        texts = [config.prompt.format(source=s, **names) for s in sources]
    shifted = [[(start + len(lead), end + len(lead)) for start, end in row] for row in spans]
    flags = token_flags(tokenizer, texts, shifted, lead=0 if seq2seq else 1)  # causal: BOS first
    return [[*row, False] for row in flags] if seq2seq else flags  # seq2seq: EOS last


def source_batches(
    tokenizer: Any,
    sources: Sequence[str],
    config: TranslationConfig,
    seq2seq: bool,
    batch_size: int,
    spans: Sequence[Sequence[Span]] | None = None,
) -> list[Batch]:
    """What mining counts codes on: the source side only (the encoder input, or BOS + prompt); with
    `spans`, only the source tokens that overlap them."""
    ids = source_ids(tokenizer, sources, config, seq2seq)
    flags = None if spans is None else source_flags(tokenizer, sources, spans, config, seq2seq)
    return make_batches(ids, batch_size, tokenizer.pad_token_id, flags)


def _pad(sequences: Sequence[Sequence[int]], value: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), value, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for i, sequence in enumerate(sequences):
        ids[i, : len(sequence)] = torch.tensor(sequence, dtype=torch.long)
        mask[i, : len(sequence)] = 1
    return ids, mask


# ---------------------------------------------------------------- training


@contextlib.contextmanager
def capturing_site(codebook_model: CodebookModel) -> Iterator[list[torch.Tensor]]:
    """Collect the site's output before the bottleneck replaces it (B, T, d) on every forward."""
    captured: list[torch.Tensor] = []

    def grab(_module: torch.nn.Module, _inputs: Any, output: Any) -> None:
        captured.append(output[0] if isinstance(output, tuple) else output)

    handle = site_module(codebook_model.model, codebook_model.layer).register_forward_hook(grab, prepend=True)
    try:
        yield captured
    finally:
        handle.remove()


def translation_step(
    codebook_model: CodebookModel, batch: TranslationBatch, config: TrainConfig
) -> _StepOutput:
    """Loss on the target tokens plus the bottleneck's reconstruction term, for one batch."""
    batch = batch.to(codebook_model.device)
    with recording(codebook_model) as outputs, capturing_site(codebook_model) as inputs:
        loss = codebook_model.model(
            input_ids=batch.input_ids, attention_mask=batch.attention_mask, labels=batch.labels
        ).loss
    output, hidden = outputs[0], inputs[0]
    content = batch.attention_mask.bool().clone()
    content[:, 0] = False  # BOS (causal LM) or the first prefix token (T5): no content
    n_content = content.sum().clamp_min(1)
    recon = content_sum(output.recon_error, content) / n_content
    total = loss + config.recon_coef * recon
    codes = counted_codes(output.codes, content)
    return _StepOutput(total, loss.detach(), recon.detach(), codes, (hidden.detach(), content))


def train_translation(
    codebook_model: CodebookModel, batches: list[TranslationBatch], config: TrainConfig
) -> TrainResult:
    """Train the codebook (and, per `config.mode`, base weights) on translation pairs, in place."""
    config.validate()
    torch.manual_seed(config.seed)
    groups = trainable_parameters(codebook_model, config.mode)
    lrs = {"base": config.base_lr, "bottleneck": config.lr}
    optimizer = torch.optim.AdamW(
        [dict(g, lr=lrs[g["name"]]) for g in groups], weight_decay=config.weight_decay
    )
    n_init = max(1, math.ceil(config.init_vectors / max(1, batches[0].n_tokens)))
    start = site_activations(codebook_model, batches[:n_init], precision="fp32")  # as this loop trains
    init_codes(codebook_model, start, batches[:n_init], config)
    total = math.ceil(config.epochs * len(batches))
    state = _TrainState(codebook_model.bottleneck.n_codes, codebook_model.device)
    codebook_model.model.train(config.mode == "joint")
    started, tokens = time.perf_counter(), 0
    bar = progress(total=total, desc="training translation codebook")
    with codebook_model.bottleneck.holding_groups():  # grouped search: regroup at re-seeding only
        for step, index in enumerate(_batch_order(len(batches), total, config.seed)):
            for group, spec in zip(optimizer.param_groups, groups, strict=True):
                group["lr"] = lrs[spec["name"]] * _schedule(step, total)
            out = translation_step(codebook_model, batches[index], config)
            optimizer.zero_grad(set_to_none=True)
            out.loss.backward()
            optimizer.step()
            tokens += batches[index].n_tokens
            state.record(out)
            if config.reseed_every and (step + 1) % config.reseed_every == 0:
                state.reseed(codebook_model, config.seed + step)
            state.step = step + 1
            bar.update(1)
            if state.step % state.FLUSH_EVERY == 0 or state.step == total:
                state.show(bar)
    bar.close()
    codebook_model.model.eval()
    for parameter in codebook_model.model.parameters():
        parameter.requires_grad_(False)
    return state.result(tokens, time.perf_counter() - started)


# ---------------------------------------------------------------- decoding


@torch.no_grad()
def translate(
    model: torch.nn.Module,
    tokenizer: Any,
    sources: Sequence[str],
    config: TranslationConfig,
    batch_size: int,
) -> list[str]:
    """Greedy translations of `sources`, in order.

    Causal LMs decode batches of prompts of exactly equal length: left padding would move BOS off
    position 0, where the bottleneck passes it through, and quantize it like content.
    """
    seq2seq = is_seq2seq(model)
    ids = source_ids(tokenizer, sources, config, seq2seq)
    device = next(model.parameters()).device
    outputs: list[str] = [""] * len(ids)
    groups = _decoding_groups(ids, batch_size, equal_length=not seq2seq)
    for rows in progress(groups, desc="translating"):
        input_ids, attention_mask = _pad([ids[r] for r in rows], tokenizer.pad_token_id)
        generated = model.generate(
            input_ids=input_ids.to(device),
            attention_mask=attention_mask.to(device),
            max_new_tokens=config.max_new_tokens,
            do_sample=False,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
        new = generated if seq2seq else generated[:, input_ids.shape[1] :]
        for row, text in zip(rows, tokenizer.batch_decode(new, skip_special_tokens=True), strict=True):
            # The first line that has text: an untrained base model may open with a line break.
            outputs[row] = text.strip().split("\n")[0].strip()
    return outputs


def _decoding_groups(ids: Sequence[Sequence[int]], batch_size: int, equal_length: bool) -> list[list[int]]:
    order = sorted(range(len(ids)), key=lambda row: (len(ids[row]), row))
    groups: list[list[int]] = []
    for row in order:
        if (
            groups
            and len(groups[-1]) < batch_size
            and (not equal_length or len(ids[groups[-1][0]]) == len(ids[row]))
        ):
            groups[-1].append(row)
        else:
            groups.append([row])
    return groups


# ---------------------------------------------------------------- scoring references


@torch.no_grad()
def teacher_forced_nll(
    model: torch.nn.Module,
    tokenizer: Any,
    sources: Sequence[str],
    targets: Sequence[str],
    config: TranslationConfig,
    batch_size: int,
    term_pattern: re.Pattern[str] | None = None,
) -> dict[str, float]:
    """Teacher-forced NLL (nats/token) of the reference translations: `nll` over every target token,
    and `term_nll` over the target tokens of the topic's target-language words (`term_pattern`; NaN
    when no reference holds one). Unlike corpus BLEU on a few dozen greedy decodes, this moves only
    when the model's probabilities do, and it isolates the topic word from the rest of the sentence.
    """
    seq2seq = is_seq2seq(model)
    device = next(model.parameters()).device
    src = source_ids(tokenizer, sources, config, seq2seq)
    tgt = target_ids(tokenizer, targets, config, seq2seq)
    texts = list(targets) if seq2seq else [" " + t for t in targets]
    spans = [[m.span() for m in term_pattern.finditer(t)] if term_pattern else [] for t in texts]
    terms = [
        flags[: len(ids) - 1] + [False]
        for flags, ids in zip(token_flags(tokenizer, texts, spans), tgt, strict=True)
    ]
    sums = {"nll": 0.0, "term_nll": 0.0}
    counts = {"nll": 0, "term_nll": 0}
    for start in range(0, len(src), batch_size):
        rows = range(start, min(start + batch_size, len(src)))
        labels, _ = _pad([tgt[r] for r in rows], IGNORE)
        term_mask = _pad([terms[r] for r in rows], False)[0].bool()
        if seq2seq:
            input_ids, attention_mask = _pad([src[r] for r in rows], tokenizer.pad_token_id)
            logits = model(
                input_ids=input_ids.to(device),
                attention_mask=attention_mask.to(device),
                labels=labels.to(device),
            ).logits  # (B, T_target, V), aligned with labels
        else:
            input_ids, attention_mask = _pad([src[r] + tgt[r] for r in rows], tokenizer.pad_token_id)
            full = model(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device)).logits
            # the target tokens of row i start right after its source: gather their predicting logits
            index = torch.stack(
                [
                    torch.arange(len(src[r]) - 1, len(src[r]) - 1 + labels.shape[1]).clamp_max(
                        full.shape[1] - 1
                    )
                    for r in rows
                ]
            )
            logits = full.gather(1, index.to(device).unsqueeze(-1).expand(-1, -1, full.shape[-1]))
        nll = torch.nn.functional.cross_entropy(
            logits.float().transpose(1, 2), labels.to(device), ignore_index=IGNORE, reduction="none"
        ).cpu()  # (B, T_target), 0 where ignored
        scored = labels != IGNORE
        sums["nll"] += float(nll[scored].sum())
        counts["nll"] += int(scored.sum())
        sums["term_nll"] += float(nll[term_mask & scored].sum())
        counts["term_nll"] += int((term_mask & scored).sum())
    return {k: sums[k] / counts[k] if counts[k] else float("nan") for k in sums}
