"""Benchmark: how much each way of rebuilding a hidden vector from k codes loses, before any training.

One codebook is initialised the way training starts one (spherical k-means over the base model's
activations at the bottleneck layer, on the run's training texts). For each combination (`mean` of the
top-k codes by cosine, `projection` of x onto them, `pursuit`: k codes chosen by orthogonal matching
pursuit and x fitted onto them) and each k, the same codes are put into the untouched base model, and
on the run's held-out forget and retain splits the script reports the reconstruction error
||x' - x||^2 / ||x||^2 and the model's NLL (nats/token) against the base model without a bottleneck.
Training then adapts the codes and the layers above, so this is the starting gap, not the final one;
the final one is `eval.run_reference=true` on a trained run.

Needs a run directory whose data was prepared (`codeunlearn prepare` or `run`):

    python bench/bench_bottleneck_fidelity.py --run-dir runs/default --variants mean:8 projection:8 \
        projection:32 pursuit:8
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import pyarrow.parquet as pq
import torch
from common import print_table, write_json

from codeunlearn.core.config import BottleneckConfig, TrainConfig
from codeunlearn.data.batching import Batch, encode_texts, make_batches, token_nll
from codeunlearn.model import assets
from codeunlearn.model.surgery import CodebookModel, bypassed, insert_bottleneck, recording, remove_bottleneck
from codeunlearn.training.code_start import init_codes
from codeunlearn.training.trainer import site_activations


def split_batches(run_dir: Path, codebook_model: CodebookModel, name: str, limit: int) -> list[Batch]:
    """Batches of the first `limit` texts of a prepared split (`topic/forget_test`, `corpus/train`)."""
    texts = pq.read_table(run_dir / "data" / f"{name}.parquet")["text"].to_pylist()[:limit]
    tokenizer = codebook_model.tokenizer
    return make_batches(encode_texts(tokenizer, texts, 48), 16, tokenizer.pad_token_id)


@torch.no_grad()
def score(codebook_model: CodebookModel, batches: list[Batch]) -> tuple[float, float | None]:
    """Mean next-token NLL, and the mean reconstruction error over content tokens when the bottleneck
    is in force (None inside `bypassed`, the base model)."""
    total = count = recon = recon_count = 0.0
    for batch in batches:
        with recording(codebook_model) as outputs:
            logits = codebook_model.model(
                input_ids=batch.input_ids, attention_mask=batch.attention_mask
            ).logits
        total += float(token_nll(logits, batch).sum())
        count += float(batch.attention_mask[:, 1:].sum())
        if outputs:
            content = batch.attention_mask.bool().clone()
            content[:, 0] = False
            recon += float(outputs[0].recon_error[content].sum())
            recon_count += float(content.sum())
    return total / count, (recon / recon_count if recon_count else None)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--run-dir", type=Path, default=Path("runs/default"))
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--layer", type=int, default=20)
    parser.add_argument("--n-codes", type=int, default=4096)
    parser.add_argument(
        "--variants", nargs="+", default=["mean:8", "projection:8", "projection:32", "pursuit:8"]
    )
    parser.add_argument(
        "--init-texts", type=int, default=3000, help="training texts whose activations seed k-means"
    )
    parser.add_argument("--init-vectors", type=int, default=24000)
    parser.add_argument("--eval-texts", type=int, default=500, help="held-out texts per split")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="JSON path (default bench/results/...)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    model, tokenizer = assets.load_pretrained(args.model)
    config = BottleneckConfig(layer=args.layer, n_codes=args.n_codes)
    codebook_model = insert_bottleneck(model, tokenizer, config, args.model)
    started = time.perf_counter()
    init_batches = split_batches(args.run_dir, codebook_model, "corpus/train", args.init_texts)
    train_config = TrainConfig(init_vectors=args.init_vectors, kmeans_iters=10)
    init_codes(codebook_model, site_activations(codebook_model, init_batches), init_batches, train_config)
    codes = codebook_model.bottleneck.codes.detach().clone()
    print(
        f"k-means over {args.init_vectors} activations into {args.n_codes} codes: "
        f"{time.perf_counter() - started:.0f} s",
        flush=True,
    )

    splits = {
        name: split_batches(args.run_dir, codebook_model, f"topic/{name}_test", args.eval_texts)
        for name in ("forget", "retain")
    }
    rows = [{"variant": "base model, no bottleneck"}]
    with bypassed(codebook_model):
        for name, batches in splits.items():
            rows[0][f"{name} NLL"] = score(codebook_model, batches)[0]
    remove_bottleneck(codebook_model)
    for variant in args.variants:
        combine, k = variant.split(":")
        variant_config = dataclasses.replace(config, combine=combine, top_k=int(k))
        codebook_model = insert_bottleneck(model, tokenizer, variant_config, args.model)
        codebook_model.bottleneck.reset_codes(torch.arange(args.n_codes), codes)
        row: dict = {"variant": f"{combine}, k={k}"}
        started = time.perf_counter()
        for name, batches in splits.items():
            nll, recon = score(codebook_model, batches)
            row[f"{name} recon"], row[f"{name} NLL"] = recon, nll
            row[f"{name} ΔNLL"] = nll - rows[0][f"{name} NLL"]
        row["seconds"] = time.perf_counter() - started
        rows.append(row)
        remove_bottleneck(codebook_model)
        print(row, flush=True)
    columns = ["variant", "seconds"]
    for name in splits:
        columns[1:1] = [f"{name} recon", f"{name} NLL", f"{name} ΔNLL"]
    print_table(rows, columns)
    args.shape = "smollm2-135m" if args.model == "smollm2-135m-instruct" else "model"
    write_json("bottleneck-fidelity", args, codebook_model.device, {"rows": rows})


if __name__ == "__main__":
    main()
