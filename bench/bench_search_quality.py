"""Benchmark: how often the grouped code search (bottleneck.search=grouped) differs from exact top-k, and
what that changes in the model and in its forgetting, on a trained codebook model and real text (CPU;
needs a run directory from `codeunlearn run`).

On the run's held-out forget and retain splits (`data/topic/{forget,retain}_test.parquet`) it reports,
for exact search and for grouped search with each probe count P: the share of tokens whose set of k
codes differs from exact, the mean share of exact codes found (recall), the seconds of one selection
over all tokens, the held-out NLL of the codebook model, and with the run's active mask in force the
normalised forget and retain drops (0 = codebook model, 1 = base model). `--n-codes C` adds a codebook
of C codes sampled from the site activations of training texts (how `train.init=sample` starts one;
untrained, so recall only) to see recall at a size the run did not train.

    python bench/bench_search_quality.py --run-dir runs/default --probes 8 16 32
    python bench/bench_search_quality.py --run-dir runs/default --n-codes 65536 --sample-texts 5000
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import pyarrow.parquet as pq
import torch
from common import print_table, write_json

from codeunlearn.data.batching import Batch, encode_texts, make_batches, token_nll
from codeunlearn.evaluation.evaluator import normalized_drop
from codeunlearn.model.bottleneck import CodebookBottleneck
from codeunlearn.model.code_init import sample_codes
from codeunlearn.model.surgery import CodebookModel, bypassed, forward_to_site, load_codebook_model
from codeunlearn.unlearning.masks import apply_mask, load_mask


def split_batches(run_dir: Path, codebook_model: CodebookModel, name: str, limit: int) -> list[Batch]:
    """Batches of the first `limit` texts of a split: `topic/forget_test`, `corpus/train`, ..."""
    texts = pq.read_table(run_dir / "data" / f"{name}.parquet")["text"].to_pylist()[:limit]
    tokenizer = codebook_model.tokenizer
    return make_batches(encode_texts(tokenizer, texts, 64), 16, tokenizer.pad_token_id)


@torch.no_grad()
def site_vectors(codebook_model: CodebookModel, batches: list[Batch]) -> torch.Tensor:
    """Encoded site activations at content positions (N, e), as the bottleneck compares them."""
    rows = []
    with bypassed(codebook_model):
        for batch in batches:
            hidden = forward_to_site(codebook_model, batch.input_ids, batch.attention_mask)[0]
            content = batch.attention_mask.bool().clone()
            content[:, 0] = False
            rows.append(hidden[content])
    return torch.cat(rows)


@torch.no_grad()
def mean_nll(model: torch.nn.Module, batches: list[Batch]) -> float:
    """Mean next-token NLL of `model` (a base model or a codebook model's) over `batches`."""
    total = count = 0.0
    for batch in batches:
        logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
        total += float(token_nll(logits, batch).sum())
        count += float(batch.attention_mask[:, 1:].sum())
    return total / count


def use_search(bottleneck: CodebookBottleneck, probes: int) -> None:
    """Exact search (probes 0), or grouped search probing `probes` groups."""
    search = "grouped" if probes else "exact"
    bottleneck.serve(
        dataclasses.replace(
            bottleneck.policy, search=search, search_probes=probes or bottleneck.policy.search_probes
        )
    )


def agreement(bottleneck: CodebookBottleneck, vectors: torch.Tensor, probes: list[int]) -> list[dict]:
    """Per search: probes, share of tokens differing from exact, recall, seconds of one selection."""
    rows, exact = [], None
    for p in [0, *probes]:
        use_search(bottleneck, p)
        bottleneck.select(vectors[:8])  # a grouped search builds its index here, once per set of codes
        started = time.perf_counter()
        found = bottleneck.select(vectors).sort(-1).values
        seconds = time.perf_counter() - started
        exact = found if exact is None else exact
        row = {"n_codes": bottleneck.n_codes, "probes": p, "select_s": seconds}
        n_groups = bottleneck.policy.n_search_groups(bottleneck.config)
        row["search"] = f"grouped P={p} of G={n_groups}" if p else "exact"
        row["differ"] = (found != exact).any(-1).float().mean().item()
        row["recall"] = (found.unsqueeze(-1) == exact.unsqueeze(-2)).any(-1).float().mean().item()
        rows.append(row)
    return rows


def base_nll(model_name: str, sets: dict[str, list[Batch]]) -> dict[str, float]:
    """Held-out NLL of the pretrained model the codebook was trained into (0 of the normalised drop)."""
    from codeunlearn.model.assets import load_pretrained

    model, _ = load_pretrained(model_name, "cpu")
    return {name: mean_nll(model, batches) for name, batches in sets.items()}


def forgetting(
    codebook_model: CodebookModel, sets: dict[str, list[Batch]], mask, base: dict[str, float], row: dict
) -> None:
    """Held-out NLL of each split under the row's search, unmasked and masked, and the drops."""
    use_search(codebook_model.bottleneck, row["probes"])
    apply_mask(codebook_model, None)
    plain = {name: mean_nll(codebook_model.model, batches) for name, batches in sets.items()}
    apply_mask(codebook_model, mask)
    masked = {name: mean_nll(codebook_model.model, batches) for name, batches in sets.items()}
    apply_mask(codebook_model, None)
    for name in sets:
        row[f"{name}_nll"] = plain[name]
        row[f"{name}_masked_nll"] = masked[name]
        row[f"{name}_drop"] = normalized_drop(base[name], plain[name], masked[name])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", type=Path, default=Path("runs/default"))
    parser.add_argument("--texts", type=int, default=1000, help="held-out texts per split, at most")
    parser.add_argument("--probes", type=int, nargs="*", default=[8, 16, 32])
    parser.add_argument("--n-codes", type=int, default=0, help="also a sampled codebook of this size")
    parser.add_argument("--sample-texts", type=int, default=5000, help="corpus training texts to sample from")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    args.shape = "trained"
    codebook_model = load_codebook_model(args.run_dir / "model")
    mask = load_mask(args.run_dir / "masks" / "active.json")
    sets = {
        name: split_batches(args.run_dir, codebook_model, f"topic/{name}_test", args.texts)
        for name in ("forget", "retain")
    }
    vectors = site_vectors(codebook_model, [b for batches in sets.values() for b in batches])
    rows = agreement(codebook_model.bottleneck, vectors, args.probes)
    base = base_nll(codebook_model.base_name, sets)
    for row in rows:
        forgetting(codebook_model, sets, mask, base, row)
    if args.n_codes:
        training = split_batches(args.run_dir, codebook_model, "corpus/train", args.sample_texts)
        samples = site_vectors(codebook_model, training)
        if samples.shape[0] < args.n_codes:
            parser.error(f"{samples.shape[0]} tokens cannot seed {args.n_codes} codes: raise --sample-texts")
        trained = codebook_model.bottleneck
        config = dataclasses.replace(trained.config, n_codes=args.n_codes)
        sampled = CodebookBottleneck(trained.hidden_dim, config)
        codes = sample_codes(samples, args.n_codes, torch.Generator().manual_seed(0))
        sampled.reset_codes(torch.arange(args.n_codes), codes)
        rows += agreement(sampled, vectors, args.probes)
    print(
        f"grouped vs exact code search, {args.run_dir}, {vectors.shape[0]:,} held-out tokens "
        f"({args.texts} forget + {args.texts} retain texts), k={codebook_model.bottleneck.config.top_k}, "
        f"mask of {len(mask.code_ids)} codes, {torch.get_num_threads()} threads"
    )
    columns = ["n_codes", "search", "differ", "recall", "select_s", "forget_nll", "retain_nll"]
    print_table(rows, [*columns, "forget_masked_nll", "retain_masked_nll", "forget_drop", "retain_drop"])
    write_json("search_quality", args, torch.device("cpu"), {"tokens": vectors.shape[0], "results": rows})


if __name__ == "__main__":
    main()
