"""How often a topic's text detector (bottleneck.mask_condition=text) flags its test texts and the
retain texts, and what share of their tokens it reaches, for several `mask_detect_after` values and
raised thresholds. Uses the detector the sweep fits (its cached mean inputs; computed if missing) and
the topic's splits as the sweep draws them. Prints one line per setting.

    python scripts/text_detector_flags.py -c configs/gcide.yaml --topic Bot. \\
        bottleneck.mask_condition=text mining.detector_recall=0.9
"""

from __future__ import annotations

import argparse

import torch

from codeunlearn.core.config import load_config
from codeunlearn.data.batching import bos_id, make_batches
from codeunlearn.model.surgery import bypassed, forward_to_site
from codeunlearn.pipeline.sweep import Sweep

AFTER = (4, 8, 12, 16)
RAISED = (0.0, 1.0, 2.0)  # log odds added to the threshold


@torch.no_grad()
def token_scores(sweep: Sweep, texts: list[str], weight: torch.Tensor) -> list[tuple[torch.Tensor, ...]]:
    """Per batch: each token's detector score x . w (B, T) after BOS, and which tokens are real."""
    model = sweep.codebook_model
    tokenizer, max_length = model.tokenizer, sweep.config.data.max_length
    start = bos_id(tokenizer)
    ids = [[start, *tokenizer(t, add_special_tokens=False)["input_ids"]][:max_length] for t in texts]
    out = []
    with bypassed(model):
        for batch in make_batches(ids, 64, tokenizer.pad_token_id):
            hidden = forward_to_site(model, batch.input_ids, batch.attention_mask)[0].float()[:, 1:]
            out.append((hidden @ weight, batch.attention_mask[:, 1:].float()))
    return out


def flagged(scores, offset: float, after: int) -> tuple[float, float]:
    """The share of texts flagged at some token, and the mean share of their tokens from the flag on."""
    texts = flags = 0
    reached = 0.0
    for score, real in scores:
        count = real.cumsum(1)
        hit = ((score * real).cumsum(1) / count.clamp_min(1) + offset >= 0) & (count >= after) & (real > 0)
        length = real.sum(1)
        first = torch.where(hit.any(1), hit.float().argmax(1), length)
        flags += int(hit.any(1).sum())
        reached += float(((length - first) / length).sum())
        texts += len(length)
    return flags / texts, reached / texts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-c", "--config", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    sweep = Sweep(load_config(args.config, args.overrides))
    splits = sweep.splits(args.topic)
    detector = sweep.detector(args.topic, splits)
    if detector is None:
        parser.error("give bottleneck.mask_condition=text and mining.detector_recall (see the usage above)")
    weight, offset = detector.as_linear()
    weight = torch.as_tensor(weight, dtype=torch.float32)
    scores = {
        name: token_scores(sweep, getattr(splits, name).column("text").to_pylist(), weight)
        for name in ("forget_test", "retain_test")
    }
    for after in AFTER:
        for raised in RAISED:
            cells = []
            for name, split_scores in scores.items():
                texts, tokens = flagged(split_scores, offset - raised, after)
                cells.append(f"{name}: texts flagged {texts:.3f}, tokens reached {tokens:.3f}")
            setting = f"reads >= {after} tokens, threshold +{raised}"
            print(f"{args.topic} {setting}: " + "; ".join(cells), flush=True)


if __name__ == "__main__":
    main()
