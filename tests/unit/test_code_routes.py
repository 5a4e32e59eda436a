"""Code routes (train.route_codes): a routed label's texts train on its reserved codes and the shared
ones, every other text on the shared ones only; reserved codes start at their label's activations
and are never re-seeded from other texts; serving is unrestricted."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from codeunlearn.core.config import BottleneckConfig, ConfigError, RunConfig, TrainConfig
from codeunlearn.core.paths import RunPaths
from codeunlearn.data.batching import encode_texts, make_batches
from codeunlearn.model.bottleneck import NO_CODE, CodebookBottleneck
from codeunlearn.model.surgery import insert_bottleneck
from codeunlearn.pipeline.training_texts import training_routes, training_sample
from codeunlearn.training.code_routes import SHARED, CodeRoutes, TextRoutes
from codeunlearn.training.code_start import content_vectors
from codeunlearn.training.stamp import same_training, training_stamp
from codeunlearn.training.train_state import _TrainState
from codeunlearn.training.trainer import site_activations, train

from ..conftest import make_tiny


def test_each_label_may_choose_its_own_codes_and_the_shared_ones():
    routes = CodeRoutes.reserve(["Bot.", "Law"], per_label=4, n_codes=16, top_k=2)
    assert list(routes.reserved("Law")) == [4, 5, 6, 7] and routes.n_shared == 8
    ids = routes.route_ids(["Law", None, "Zool.", "Bot."])
    assert ids.tolist() == [1, SHARED, SHARED, 0]
    allowed = routes.allowed(ids)
    assert allowed[0].nonzero().flatten().tolist() == [4, 5, 6, 7, *range(8, 16)]
    assert allowed[1].nonzero().flatten().tolist() == list(range(8, 16))
    assert allowed[3, :4].all() and not allowed[3, 4:8].any()


@pytest.mark.parametrize(("per_label", "problem"), [(1, "under bottleneck.top_k"), (7, "leaving 2 shared")])
def test_routes_that_leave_too_few_codes_are_refused(per_label, problem):
    with pytest.raises(ConfigError, match=problem):
        CodeRoutes.reserve(["a", "b"], per_label=per_label, n_codes=16, top_k=4)


def setup_routed(tokenizer, texts):
    model = make_tiny("llama", len(tokenizer), n_layers=3)
    codebook_model = insert_bottleneck(model, tokenizer, BottleneckConfig(layer=1, n_codes=32, top_k=4), "t")
    rows = texts * 3
    labels = ["food" if i % len(texts) < 3 else None for i in range(len(rows))]
    batches = make_batches(encode_texts(tokenizer, rows, 32), 4, tokenizer.pad_token_id)
    routes = CodeRoutes.reserve(["food"], per_label=8, n_codes=32, top_k=4)
    return codebook_model, batches, TextRoutes(routes, routes.route_ids(labels)), labels


def test_training_chooses_only_routed_codes_and_serving_chooses_any(tokenizer, texts):
    codebook_model, batches, routes, labels = setup_routed(tokenizer, texts)
    bottleneck = codebook_model.bottleneck
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []
    hook = bottleneck.register_forward_hook(lambda m, _i, out: seen.append((m._routes.clone(), out.codes)))
    config = TrainConfig(mode="above", epochs=2, lr=1e-2, reseed_every=2, kmeans_iters=2)
    train(codebook_model, batches, config, routes=routes)
    hook.remove()

    food_codes = other_codes = 0
    for allowed, codes in seen:
        chosen = codes.clamp_min(0)
        permitted = allowed.gather(1, chosen.flatten(1)).view_as(chosen)
        assert (permitted | (codes == NO_CODE)).all()  # no row ever took a code outside its routes
        reserved = (codes >= 0) & (codes < 8)
        food_rows = allowed[:, 0]
        food_codes += int(reserved[food_rows].sum())
        other_codes += int(reserved[~food_rows].sum())
    assert food_codes > 0 and other_codes == 0

    # Serving: no routes in force, every code may be chosen (the food texts pick their reserved codes)
    hidden = site_activations(codebook_model, batches)
    served = torch.cat(
        [bottleneck.code_ids(content_vectors(h, b)) for h, b in zip(hidden, batches, strict=True)]
    )
    assert bottleneck._routes is None and (served < 8).any()


def test_the_route_error_is_how_far_forbidden_codes_reach_into_the_top_k():
    bottleneck = CodebookBottleneck(2, BottleneckConfig(n_codes=4, top_k=1, skip_first_token=False))
    angles = torch.tensor([0.0, 0.3, 0.6, 1.2])
    with torch.no_grad():
        bottleneck.codes.copy_(torch.stack([angles.cos(), angles.sin()], dim=1))
    x = torch.tensor([[[1.0, 0.0]]])  # cosine 1 to code 0, cos(0.3) to code 1, ...
    allowed = torch.tensor([[False, False, True, True]])  # its best allowed code is code 2
    with bottleneck.routed(allowed, margin=0.1):
        out = bottleneck(x)
    assert out.codes.flatten().tolist() == [2]
    reach = [max(0.0, float(angles[i].cos() - angles[2].cos()) + 0.1) for i in (0, 1)]
    assert out.route_error.item() == pytest.approx(sum(reach), abs=1e-5)
    out.route_error.sum().backward()
    assert bottleneck.codes.grad[:2].abs().sum() > 0 and bottleneck.codes.grad[3].abs().sum() == 0
    assert bottleneck(x).route_error is None  # served: no routes, no route error


def served_reserved_share(codebook_model, batches, labels) -> float:
    """Share of the unrouted texts' served slots that fall on the food label's reserved codes."""
    vectors = []
    for hidden, batch in zip(site_activations(codebook_model, batches), batches, strict=True):
        valid = batch.attention_mask.bool()
        valid[:, 0] = False
        vectors += [hidden[r][valid[r]] for r, row in enumerate(batch.rows.tolist()) if labels[row] is None]
    ids = codebook_model.bottleneck.code_ids(torch.cat(vectors))
    return float((ids < 8).float().mean())


def test_the_route_loss_keeps_serving_to_the_codes_training_chose(tokenizer, texts):
    shares = {}
    for coef in (0.0, 1.0):
        codebook_model, batches, routes, labels = setup_routed(tokenizer, texts)
        config = TrainConfig(
            mode="above",
            epochs=6,
            lr=3e-2,
            reseed_every=0,
            kmeans_iters=2,
            route_coef=coef,
            route_margin=0.05,
        )
        train(codebook_model, batches, config, routes=routes)
        shares[coef] = served_reserved_share(codebook_model, batches, labels)
    assert shares[1.0] < shares[0.0]


def test_reserved_codes_start_at_their_labels_activations(tokenizer, texts):
    codebook_model, batches, routes, labels = setup_routed(tokenizer, texts)
    config = TrainConfig(mode="above", epochs=1e-9, reseed_every=0, kmeans_iters=3)  # initialisation only
    train(codebook_model, batches, config, routes=routes)
    activations = site_activations(codebook_model, batches)
    units = torch.nn.functional.normalize(codebook_model.bottleneck.codes.detach(), dim=-1)
    by_label = {"food": [], None: []}
    for hidden, batch in zip(activations, batches, strict=True):
        vectors = content_vectors(hidden, batch)
        rows = batch.rows.repeat_interleave(batch.attention_mask[:, 1:].sum(1))
        for vector, row in zip(vectors, rows.tolist(), strict=True):
            by_label[labels[row]].append(vector)
    closeness = {
        label: (torch.nn.functional.normalize(torch.stack(v), dim=-1) @ units[:8].T).max(1).values.mean()
        for label, v in by_label.items()
    }
    assert closeness["food"] > closeness[None]


def test_reseeding_leaves_kept_codes_alone(tokenizer, texts):
    codebook_model, batches, _, _ = setup_routed(tokenizer, texts)
    bottleneck = codebook_model.bottleneck
    state = _TrainState(32)
    hidden = site_activations(codebook_model, batches[:1])[0]
    state.recent_site = (hidden, batches[0].attention_mask.bool())
    state.usage[16:] = 1  # codes 0..15 unused
    before = bottleneck.codes.detach().clone()
    kept = torch.zeros(32, dtype=torch.bool)
    kept[:8] = True
    state.reseed(codebook_model, seed=0, kept=kept)
    changed = (bottleneck.codes.detach() != before).any(1)
    assert not changed[:8].any() and changed[8:16].all() and not changed[16:].any()
    assert state.dead_share == 0.5


def labelled_run(tmp_path, counts: dict[str | None, int]) -> RunPaths:
    paths = RunPaths(tmp_path / "run")
    paths.corpus_dir.mkdir(parents=True)
    labels = [label for label, n in counts.items() for _ in range(n)]
    texts = [f"text {i} of {label}" for i, label in enumerate(labels)]
    table = pa.table({"id": [str(i) for i in range(len(texts))], "text": texts, "label": labels})
    pq.write_table(table.slice(0, len(texts) - 6), paths.corpus_dir / "train.parquet")
    pq.write_table(table.slice(len(texts) - 6), paths.corpus_dir / "test.parquet")
    return paths


def test_labels_with_enough_examples_over_both_sides_reserve_codes(tmp_path):
    paths = labelled_run(tmp_path, {"Bot.": 12, "Law": 10, "Her.": 4, None: 3})
    config = RunConfig(
        run_dir=str(paths.root),
        bottleneck=BottleneckConfig(n_codes=64, top_k=4),
        train=TrainConfig(max_examples=20, route_codes=8, route_min_examples=10),
    )
    texts, labels = training_sample(config)
    routes = training_routes(config, labels)
    assert routes.routes.labels == ("Bot.", "Law")  # Law's last rows are on the test side
    assert [routes.routes.labels[i] if i >= 0 else None for i in routes.route_ids.tolist()] == [
        label if label in ("Bot.", "Law") else None for label in labels
    ]
    assert all(text.endswith(f"of {label}") for text, label in zip(texts, labels, strict=True))
    routes.routes.save(tmp_path)
    assert json.loads((tmp_path / "code_routes.json").read_text())["reserved"]["Law"] == [8, 16]
    assert training_routes(RunConfig(run_dir=str(paths.root)), labels) is None  # off by default


def test_routes_need_a_labelled_corpus_and_change_the_trained_model(tmp_path):
    paths = RunPaths(tmp_path / "run")
    paths.corpus_dir.mkdir(parents=True)
    for side in ("train", "test"):
        pq.write_table(pa.table({"id": ["0"], "text": ["a"]}), paths.corpus_dir / f"{side}.parquet")
    config = RunConfig(run_dir=str(paths.root), train=TrainConfig(route_codes=8))
    with pytest.raises(ConfigError, match="labelled corpus"):
        training_routes(config, [None])
    plain = training_stamp(RunConfig())
    assert not same_training(plain, training_stamp(config))
    old = json.loads(json.dumps(plain))
    del old["train"]["route_codes"], old["train"]["route_min_examples"]
    assert same_training(old, plain)  # a model saved before routes existed still matches
    with pytest.raises(ConfigError, match="route_codes"):
        TrainConfig(route_codes=-1).validate()
