"""What serving does with a codebook trained with code routes (train.route_codes): for each topic, the
NLL of its test texts served as always (every code may be chosen) and served with its training routes
(its reserved codes and the shared ones), the shares of its served code slots that fall on its own
reserved codes, the shared ones and other labels' reserved codes, the share of other labels' test slots
served its reserved codes, and the NLL of those other labels' texts (as served). Reads
`code_routes.json` beside the model. One line per topic; on a model trained without routes (no
`code_routes.json`) the NLLs only, as the baseline.

    python scripts/route_serving.py -c configs/gcide.yaml --topics Bot.,Law \\
        run_dir=runs/gcide-routed-repel train.route_codes=64
"""

from __future__ import annotations

import argparse
import contextlib
import json

import pyarrow.compute as pc
import torch

from codeunlearn.core.config import load_config
from codeunlearn.core.paths import run_paths
from codeunlearn.data.batching import Batch, token_nll
from codeunlearn.data.tables import batch_texts, read_table
from codeunlearn.model.loading import load_model
from codeunlearn.model.surgery import CodebookModel
from codeunlearn.training.code_routes import ROUTES_FILE, CodeRoutes
from codeunlearn.training.code_start import content_vectors
from codeunlearn.training.trainer import site_activations

N_TEXTS = 200


@torch.no_grad()
def mean_nll(model: CodebookModel, batches: list[Batch], allowed: torch.Tensor | None) -> float:
    total = tokens = 0.0
    for batch in batches:
        rows = batch.input_ids.shape[0]
        routed = model.bottleneck.routed(allowed.expand(rows, -1)) if allowed is not None else None
        with routed or contextlib.nullcontext():
            logits = model.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
        total += float(token_nll(logits, batch).sum())
        tokens += float(batch.attention_mask[:, 1:].sum())
    return total / tokens


@torch.no_grad()
def served_owners(model: CodebookModel, batches: list[Batch], routes: CodeRoutes) -> torch.Tensor:
    """The route each served code slot's code is reserved for (SHARED: a shared code), flattened."""
    hidden = site_activations(model, batches)
    owner = routes.code_routes()
    return torch.cat(
        [owner[model.bottleneck.select(content_vectors(h, b))] for h, b in zip(hidden, batches, strict=True)]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-c", "--config", required=True)
    parser.add_argument("--topics", required=True, help="comma-separated routed labels")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    config = load_config(args.config, args.overrides)
    paths = run_paths(config)
    routes_path = paths.model_dir / ROUTES_FILE
    routes = None
    if routes_path.is_file():
        saved = json.loads(routes_path.read_text())
        labels = sorted(saved["reserved"], key=lambda label: saved["reserved"][label][0])
        routes = CodeRoutes(tuple(labels), saved["per_label"], saved["n_codes"])
    model = load_model(config)
    test = read_table(paths.corpus_dir / "test.parquet")
    print("topic | NLL served | NLL routed | own / shared / others' slots | others' texts: on its codes, NLL")
    for topic in args.topics.split(","):
        is_topic = pc.equal(test.column("label"), topic)
        texts = test.filter(is_topic).column("text").to_pylist()[:N_TEXTS]
        others = test.filter(pc.invert(is_topic)).column("text").to_pylist()[::7][:N_TEXTS]
        batches = batch_texts(texts, model.tokenizer, config.data.max_length, 16)
        other_batches = batch_texts(others, model.tokenizer, config.data.max_length, 16)
        other_nll = mean_nll(model, other_batches, None)
        if routes is None:
            print(f"{topic} | {mean_nll(model, batches, None):.3f} | - | - | - | {other_nll:.3f}")
            continue
        route = int(routes.route_ids([topic])[0])
        owners = served_owners(model, batches, routes)
        shares = [(owners == route), (owners < 0), (owners >= 0) & (owners != route)]
        on_topic = float((served_owners(model, other_batches, routes) == route).float().mean())
        print(
            f"{topic} | {mean_nll(model, batches, None):.3f} | "
            f"{mean_nll(model, batches, routes.allowed(torch.tensor([route]))):.3f} | "
            + " / ".join(f"{float(s.float().mean()):.3f}" for s in shares)
            + f" | {on_topic:.4f} | {other_nll:.3f}"
        )


if __name__ == "__main__":
    main()
