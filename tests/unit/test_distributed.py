"""Data parallel: 2 gloo processes reach the weights 1 process reaches on the same global batches."""

from __future__ import annotations

import socket
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from codeunlearn.core.config import BottleneckConfig, TrainConfig
from codeunlearn.data.batching import make_batches
from codeunlearn.model.surgery import decoder_layers, insert_bottleneck
from codeunlearn.training.distributed import DataParallel, local_slice
from codeunlearn.training.trainer import train

from ..conftest import make_tiny

VOCAB = 256
MODES = ("above", "joint")


def global_batches() -> list:
    """Padded batches of random lengths, the last one a single row (one process gets no rows)."""
    generator = torch.Generator().manual_seed(0)
    lengths = torch.randint(6, 20, (21,), generator=generator).tolist()
    ids = [[1, *torch.randint(3, VOCAB, (n - 1,), generator=generator).tolist()] for n in lengths]
    return make_batches(ids, batch_size=4, pad_id=2)


def config(mode: str) -> TrainConfig:
    # fp32: bf16 rounds two half-batch products apart from one whole-batch product by far more than
    # the 1e-4 the comparison below holds the sum of gradients to
    return TrainConfig(
        mode=mode,
        epochs=2,
        lr=1e-2,
        base_lr=1e-2,
        reseed_every=3,
        kmeans_iters=2,
        init_vectors=64,
        precision="fp32",
    )


def trained_weights(mode: str) -> dict[str, torch.Tensor]:
    """Train a fresh tiny Llama with a bottleneck in this process; return what training changed."""
    codebook_model = insert_bottleneck(
        make_tiny("llama", VOCAB, n_layers=3), None, BottleneckConfig(layer=1, n_codes=32, top_k=4), "t"
    )
    train(codebook_model, global_batches(), config(mode))
    layers = decoder_layers(codebook_model.model)
    return {
        "codes": codebook_model.bottleneck.codes.detach().clone(),
        "layer_above": layers[2].mlp.down_proj.weight.detach().clone(),
        "layer_below": layers[0].mlp.down_proj.weight.detach().clone(),
    }


def worker(rank: int, world_size: int, port: int, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)
    try:
        results = {mode: trained_weights(mode) for mode in MODES}
        if rank == 0:
            torch.save(results, Path(out_dir) / "parallel.pt")
    finally:
        dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_local_slices_cover_the_global_batch_once():
    batch = global_batches()[0]
    slices = [local_slice(batch, DataParallel(rank, 3)) for rank in range(3)]
    assert torch.equal(torch.cat([s.input_ids for s in slices]), batch.input_ids)
    assert [len(s.rows) for s in slices] == [1, 1, 2]


def test_two_processes_match_one_process_on_the_same_global_batches(tmp_path):
    mp.spawn(worker, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)
    parallel = torch.load(tmp_path / "parallel.pt")
    torch.set_num_threads(1)
    for mode in MODES:
        single = trained_weights(mode)
        for name, weight in single.items():
            # Summing two half-batch gradients rounds differently from one whole-batch gradient, and
            # Adam divides by sqrt(v), so differences reach ~1e-5; one Adam step here moves ~lr = 1e-2.
            torch.testing.assert_close(
                parallel[mode][name], weight, rtol=1e-4, atol=5e-5, msg=f"{mode} {name}"
            )
        # training did move the weights it trains, so equality is not trivially the initial state
        assert not torch.allclose(
            single["layer_above"], make_tiny("llama", VOCAB, 3).model.layers[2].mlp.down_proj.weight
        )
