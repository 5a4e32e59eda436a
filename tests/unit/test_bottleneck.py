"""The bottleneck: selection, masking policies, gradients, memory-bounded top-k."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from codeunlearn.core.config import BottleneckConfig
from codeunlearn.core.errors import CodeunlearnError, ConfigError
from codeunlearn.model.bottleneck import NO_CODE, CodebookBottleneck
from codeunlearn.model.serving import ServingPolicy


def make(n_codes: int = 64, top_k: int = 4, **overrides) -> CodebookBottleneck:
    torch.manual_seed(0)
    return CodebookBottleneck(16, BottleneckConfig(n_codes=n_codes, top_k=top_k, **overrides))


def brute_force_topk(x: torch.Tensor, codes: torch.Tensor, k: int) -> torch.Tensor:
    sims = torch.nn.functional.cosine_similarity(x.double()[:, None], codes.double()[None], dim=-1)
    return sims.topk(k, dim=-1).indices


def test_selection_is_cosine_topk_in_any_chunking():
    bottleneck = make(chunk_tokens=3)
    x = torch.randn(2, 9, 16)
    out = bottleneck(x)
    expected = brute_force_topk(x[:, 1:].reshape(-1, 16), bottleneck.codes.detach(), 4).view(2, 8, 4)
    assert torch.equal(out.codes[:, 1:].sort(-1).values, expected.sort(-1).values)
    assert (out.codes[:, 0] == NO_CODE).all()  # BOS passes through
    assert torch.equal(out.hidden[:, 0], x[:, 0])


def test_output_is_mean_of_chosen_codes_rescaled_to_input_norm():
    bottleneck = make()
    x = torch.randn(1, 5, 16)
    out = bottleneck(x)
    chosen = bottleneck.codes.detach()[out.codes[0, 1:]].mean(-2)
    expected = chosen * x[0, 1:].norm(dim=-1, keepdim=True) / chosen.norm(dim=-1, keepdim=True)
    torch.testing.assert_close(out.hidden[0, 1:], expected)


def test_gradients_reach_codebook_and_input():
    bottleneck = make()
    x = torch.randn(2, 6, 16, requires_grad=True)
    out = bottleneck(x)
    (out.hidden.pow(2).sum() + out.recon_error.sum()).backward()
    assert x.grad is not None and x.grad[:, 1:].abs().sum() > 0
    assert bottleneck.codes.grad is not None
    used = out.codes[out.codes != NO_CODE].unique()
    assert bottleneck.codes.grad[used].abs().sum(-1).gt(0).all()


@pytest.mark.parametrize("policy", ["next_best", "zero"])
def test_masked_code_is_never_selected(policy):
    bottleneck = make(mask_policy=policy)
    x = torch.randn(4, 12, 16)
    before = bottleneck(x).codes
    popular = before[before != NO_CODE].bincount(minlength=64).topk(10).indices
    bottleneck.set_masked(popular)
    after = bottleneck(x).codes
    assert not torch.isin(after, popular).any()
    if policy == "next_best":  # every slot is refilled by the next most similar unmasked code
        assert (after[:, 1:] != NO_CODE).all()
    else:  # slots that held a masked code are emptied, the rest are unchanged
        emptied = torch.isin(before, popular)
        assert torch.equal(after == NO_CODE, emptied | (before == NO_CODE))
        assert torch.equal(after[~emptied], before[~emptied])


def test_mask_validation():
    bottleneck = make(n_codes=8, top_k=4)
    with pytest.raises(CodeunlearnError, match="fewer than top_k"):
        bottleneck.set_masked(torch.arange(5))
    with pytest.raises(CodeunlearnError, match="another codebook"):
        bottleneck.set_masked(torch.tensor([8]))


def test_top_k_larger_than_codebook_is_refused():
    with pytest.raises(ConfigError, match="top_k=9, but bottleneck.n_codes=8"):
        make(n_codes=8, top_k=9)


def test_projection_is_least_squares_onto_the_chosen_codes():
    bottleneck = make(n_codes=16, top_k=4, combine="projection", rescale="none")
    x = torch.randn(1, 6, 16, requires_grad=True)
    out = bottleneck(x)
    codes = bottleneck.codes.detach().double()
    for t in range(1, 6):
        basis = codes[out.codes[0, t]].T  # (e, k)
        solution = torch.linalg.lstsq(basis, x[0, t].detach().double().unsqueeze(-1)).solution
        torch.testing.assert_close(
            out.hidden[0, t].double(), (basis @ solution).squeeze(-1), atol=1e-3, rtol=1e-3
        )
    out.hidden.sum().backward()
    assert x.grad.abs().sum() > 0 and bottleneck.codes.grad.abs().sum() > 0


def plain_topk(bottleneck: CodebookBottleneck, h: torch.Tensor) -> torch.Tensor:
    """The unchunked reference: one fp32 (N x C) similarity matrix, one topk."""
    codes = torch.nn.functional.normalize(bottleneck.codes.detach().float(), dim=-1)
    sims = torch.nn.functional.normalize(h.float(), dim=-1) @ codes.T
    if bottleneck.mask.any():
        sims.masked_fill_(bottleneck.mask, float("-inf"))
    return sims.topk(bottleneck.config.top_k, dim=-1).indices


@pytest.mark.parametrize(
    ("n_codes", "chunk_tokens", "chunk_codes"),
    [(64, 5, 7), (64, 4096, 64), (1000, 3, 256), (65536, 4096, 8192), (65536, 17, 10000)],
)
def test_chunked_topk_returns_the_plain_topk(n_codes, chunk_tokens, chunk_codes):
    bottleneck = make(n_codes=n_codes, top_k=8, chunk_tokens=chunk_tokens, chunk_codes=chunk_codes)
    h = torch.randn(40, 16, generator=torch.Generator().manual_seed(n_codes))
    assert torch.equal(bottleneck.select(h), plain_topk(bottleneck, h))
    bottleneck.set_masked(plain_topk(bottleneck, h)[:, :3].flatten().unique())
    masked_ids = bottleneck.select(h)
    assert torch.equal(masked_ids, plain_topk(bottleneck, h))
    assert not bottleneck.mask[masked_ids].any()


def test_coarse_candidates_agree_with_exact_topk_and_respect_the_mask():
    exact = make(n_codes=65536, top_k=8, chunk_codes=8192)
    coarse = make(n_codes=65536, top_k=8, chunk_codes=8192, coarse_candidates=32)
    h = torch.randn(64, 16, generator=torch.Generator().manual_seed(1))
    agree = (coarse.select(h).sort(-1).values == exact.select(h).sort(-1).values).float().mean()
    assert agree > 0.99
    popular = exact.select(h)[:, :2].flatten().unique()
    exact.set_masked(popular)
    coarse.set_masked(popular)
    chosen = coarse.select(h)
    assert not torch.isin(chosen, popular).any()
    assert (chosen.sort(-1).values == exact.select(h).sort(-1).values).float().mean() > 0.99


def test_coarse_selection_keeps_straight_through_gradients():
    bottleneck = make(n_codes=512, top_k=8, coarse_candidates=32, chunk_codes=100)
    x = torch.randn(2, 6, 16, requires_grad=True)
    out = bottleneck(x)
    (out.hidden.pow(2).sum() + out.recon_error.sum()).backward()
    assert x.grad[:, 1:].abs().sum() > 0
    used = out.codes[out.codes != NO_CODE].unique()
    assert bottleneck.codes.grad[used].abs().sum(-1).gt(0).all()


def test_a_loaded_mask_excludes_its_codes():
    source = make(n_codes=64, top_k=4)
    h = torch.randn(20, 16)
    popular = source.select(h)[:, 0].unique()
    source.set_masked(popular)
    loaded = make(n_codes=64, top_k=4)
    loaded.load_state_dict(source.state_dict())
    assert not torch.isin(loaded.select(h), popular).any()
    loaded.load_state_dict(make(n_codes=64, top_k=4).state_dict())  # an unmasked state clears it again
    assert torch.equal(loaded.select(h), make(n_codes=64, top_k=4).select(h))


def test_bad_chunk_and_candidate_settings_are_refused():
    with pytest.raises(ConfigError, match="coarse_candidates=4"):
        make(n_codes=64, top_k=8, coarse_candidates=4)
    with pytest.raises(ConfigError, match="chunk_tokens=0"):
        make(chunk_tokens=0)


def brute_force_pursuit(x: torch.Tensor, codes: torch.Tensor, k: int) -> list[list[int]]:
    """Orthogonal matching pursuit one token at a time, in float64, with lstsq."""
    units = torch.nn.functional.normalize(codes.double(), dim=-1)
    chosen_per_token = []
    for vector in x.double():
        chosen: list[int] = []
        residual = vector / vector.norm()
        for _ in range(k):
            scores = (units @ residual).abs()
            scores[chosen] = float("-inf")
            chosen.append(int(scores.argmax()))
            basis = units[chosen].T  # (e, j)
            fit = basis @ torch.linalg.lstsq(basis, (vector / vector.norm()).unsqueeze(-1)).solution
            residual = vector / vector.norm() - fit.squeeze(-1)
        chosen_per_token.append(chosen)
    return chosen_per_token


def test_pursuit_selects_as_orthogonal_matching_pursuit():
    bottleneck = make(n_codes=64, top_k=4, combine="pursuit", chunk_tokens=5)
    h = torch.randn(12, 16, generator=torch.Generator().manual_seed(1))
    assert bottleneck.select(h).tolist() == brute_force_pursuit(h, bottleneck.codes.detach(), 4)


def test_pursuit_recovers_a_sparse_combination_that_cosine_topk_misses():
    bottleneck = make(n_codes=64, top_k=3, combine="pursuit", rescale="none", skip_first_token=False)
    codes = bottleneck.codes.detach()
    parts = torch.tensor([[3, 17, 40], [5, 6, 60]])
    weights = torch.tensor([[1.0, 1.0, 1.0], [1.0, -0.5, 0.8]])  # a code may enter with either sign
    x = (weights.unsqueeze(-1) * codes[parts]).sum(1).unsqueeze(0)  # (1, 2, 16)
    out = bottleneck(x)
    assert torch.equal(out.codes[0].sort(-1).values, parts)
    assert out.recon_error.max() < 1e-6
    # the same codes, chosen by cosine top-k instead
    cosine = make(n_codes=64, top_k=3, combine="projection", rescale="none", skip_first_token=False)
    assert cosine(x).recon_error.max() > 10 * out.recon_error.max()


@pytest.mark.parametrize("combine", ["projection", "pursuit"])
def test_zero_policy_drops_a_masked_codes_term_without_refitting(combine):
    bottleneck = make(n_codes=32, top_k=4, combine=combine, rescale="none", mask_policy="zero")
    x = torch.randn(1, 6, 16)
    before = bottleneck(x)
    masked = before.codes[0, 1:, 0].unique()  # the first code of every token
    bottleneck.set_masked(masked)
    after = bottleneck(x)
    codes = bottleneck.codes.detach()
    for t in range(1, 6):
        ids = before.codes[0, t]
        target = x[0, t].double().unsqueeze(-1)
        weights = torch.linalg.lstsq(codes[ids].T.double(), target).solution.squeeze(-1)
        kept = ~torch.isin(ids, masked)
        expected = (weights[kept].unsqueeze(-1) * codes[ids][kept].double()).sum(0)
        torch.testing.assert_close(after.hidden[0, t].double(), expected, atol=1e-3, rtol=1e-3)


@pytest.mark.parametrize("combine", ["mean", "projection"])
def test_zero_policy_keeps_the_unmasked_scale_so_kept_codes_do_not_make_up_for_a_masked_one(combine):
    bottleneck = make(n_codes=32, top_k=4, combine=combine, mask_policy="zero")
    unscaled = make(n_codes=32, top_k=4, combine=combine, mask_policy="zero", rescale="none")
    x = torch.randn(1, 6, 16)
    before, before_unscaled = bottleneck(x), unscaled(x)
    masked = before.codes[0, 1:, 0].unique()
    for model in (bottleneck, unscaled):
        model.set_masked(masked)
    after, after_unscaled = bottleneck(x), unscaled(x)
    scale = x[0, 1:].norm(dim=-1, keepdim=True) / before_unscaled.hidden[0, 1:].norm(dim=-1, keepdim=True)
    torch.testing.assert_close(after.hidden[0, 1:], after_unscaled.hidden[0, 1:] * scale)
    assert (after.hidden[0, 1:].norm(dim=-1) < x[0, 1:].norm(dim=-1) - 1e-4).any()


@pytest.mark.parametrize("combine", ["mean", "pursuit"])
def test_gated_zero_policy_drops_masked_codes_only_where_enough_of_them_meet(combine):
    ungated = make(n_codes=32, top_k=4, combine=combine, mask_policy="zero")
    gated = make(n_codes=32, top_k=4, combine=combine, mask_policy="zero", mask_gate=2)
    x = torch.randn(3, 10, 16)
    before = ungated(x)
    masked = before.codes[0, 1:, :2].unique()  # two codes of every token of the first sequence
    for bottleneck in (ungated, gated):
        bottleneck.set_masked(masked)
    dropped, kept = ungated(x), gated(x)
    hits = torch.isin(before.codes, masked).sum(-1)  # (B, T) masked codes each token chose
    assert (hits[0, 1:] >= 2).all() and (hits == 1).any()  # both kinds of token occur
    met = hits >= 2
    torch.testing.assert_close(kept.hidden[met], dropped.hidden[met])
    assert torch.equal(kept.codes[met], dropped.codes[met])
    torch.testing.assert_close(kept.hidden[~met], before.hidden[~met])  # below the gate: untouched
    assert torch.equal(kept.codes[~met], before.codes[~met])
    assert not torch.equal(kept.hidden[hits == 1], dropped.hidden[hits == 1])
    h = x[:, 1:].reshape(-1, 16)
    assert torch.equal(gated.code_ids(h), kept.codes[:, 1:].reshape(-1, 4))  # mining counts the same


def test_pursuit_never_selects_a_masked_code_and_refuses_other_searches():
    bottleneck = make(combine="pursuit")
    x = torch.randn(4, 12, 16)
    before = bottleneck(x).codes
    popular = before[before != NO_CODE].bincount(minlength=64).topk(10).indices
    bottleneck.set_masked(popular)
    after = bottleneck(x).codes
    assert not torch.isin(after, popular).any() and (after[:, 1:] != NO_CODE).all()
    with pytest.raises(ConfigError, match="combine='pursuit'"):
        make(combine="pursuit", search="grouped")


def context_gated(gate: int = 3, context_gate: int = 1, after: int = 1, **overrides) -> CodebookBottleneck:
    return make(
        n_codes=32,
        top_k=4,
        mask_policy="zero",
        mask_gate=gate,
        mask_context_gate=context_gate,
        mask_context_after=after,
        **overrides,
    )


# Two sequences of 6 tokens, 4 codes each; codes 0, 1, 2 masked. Row 0 opens with BOS, row 1 ends in
# padding (NO_CODE slots, never masked, never counted). Masked codes per token:
# row 0: -, 1, 3, 1, 0, 2    row 1: 2, 0, 3, 3, 1, -
N = NO_CODE
CONTEXT_IDS = torch.tensor(
    [
        [[N, N, N, N], [0, 9, 10, 11], [0, 1, 2, 12], [1, 13, 14, 15], [20, 21, 22, 23], [2, 0, 30, 31]],
        [[0, 1, 30, 31], [5, 6, 7, 8], [0, 1, 2, 9], [2, 1, 0, 3], [2, 10, 11, 12], [N, N, N, N]],
    ]
)


@pytest.mark.parametrize(
    ("context_gate", "after", "dropped_tokens"),
    [
        (0, 1, {(0, 2), (1, 2), (1, 3)}),  # the plain gate of 3
        (1, 1, {(0, 2), (0, 3), (0, 5), (1, 2), (1, 3), (1, 4)}),  # 1 or more after one gated token
        (2, 1, {(0, 2), (0, 5), (1, 2), (1, 3)}),  # 2 or more after one gated token
        (1, 2, {(0, 2), (1, 2), (1, 3), (1, 4)}),  # 1 or more after two gated tokens
    ],
)
def test_context_gate_drops_the_masked_codes_of_a_hand_count(context_gate, after, dropped_tokens):
    bottleneck = context_gated(context_gate=context_gate, after=after)
    bottleneck.set_masked(torch.tensor([0, 1, 2]))
    ids = bottleneck.without_dropped(CONTEXT_IDS)
    masked = torch.isin(CONTEXT_IDS, torch.tensor([0, 1, 2]))
    for row, token in ((r, t) for r in range(2) for t in range(6)):
        expected = CONTEXT_IDS[row, token].masked_fill(masked[row, token], N)
        wanted = expected if (row, token) in dropped_tokens else CONTEXT_IDS[row, token]
        assert torch.equal(ids[row, token], wanted), (row, token)
    # Unrelated tokens (N, k) have no earlier tokens: only the plain gate applies.
    flat = CONTEXT_IDS.view(-1, 4)
    gated_rows = torch.tensor([2, 8, 9])  # tokens (0, 2), (1, 2), (1, 3)
    expected = flat.clone()
    expected[gated_rows] = flat[gated_rows].masked_fill(masked.view(-1, 4)[gated_rows], N)
    assert torch.equal(bottleneck.without_dropped(flat), expected)


def test_context_gate_carries_the_gated_count_across_cached_decoding_steps():
    bottleneck = context_gated(combine="pursuit")
    x = torch.randn(2, 14, 16)
    unmasked = bottleneck(x).codes
    masked = unmasked[:, 1:].flatten().bincount(minlength=32).topk(12).indices
    bottleneck.set_masked(masked)
    plain = context_gated(context_gate=0, combine="pursuit")
    plain.set_masked(masked)
    full = bottleneck(x)

    prefix = 5
    steps = [bottleneck(x[:, :prefix], torch.arange(prefix).expand(2, -1))]
    for position in range(prefix, x.shape[1]):
        steps.append(bottleneck(x[:, position : position + 1], torch.full((2, 1), position)))
    assert torch.equal(torch.cat([step.codes for step in steps], dim=1), full.codes)
    torch.testing.assert_close(torch.cat([step.hidden for step in steps], dim=1), full.hidden)
    # The count mattered: without the context gate some later token keeps its masked codes.
    assert not torch.equal(plain(x).codes[:, prefix:], full.codes[:, prefix:])
    # A forward over a new sequence starts its count afresh.
    other = torch.randn(2, 6, 16)
    fresh = context_gated(combine="pursuit")
    fresh.set_masked(masked)
    assert torch.equal(bottleneck(other).codes, fresh(other).codes)


SERVED = [
    {"mask_policy": "next_best"},
    {"mask_policy": "zero"},
    {"mask_policy": "zero", "mask_gate": 2},
    {"mask_policy": "zero", "mask_gate": 3, "mask_context_gate": 1, "mask_context_after": 2},
    {"search": "grouped", "search_groups": 8, "search_probes": 4},
    {"search": "grouped", "search_groups": 8, "search_probes": 4, "mask_policy": "zero", "mask_gate": 2},
]


def decoded(bottleneck: CodebookBottleneck, x: torch.Tensor, prefix: int = 4) -> list:
    """A whole forward, then the same text as a prompt and one cached decoding step per token."""
    with torch.no_grad():
        steps = [bottleneck(x), bottleneck(x[:, :prefix], torch.arange(prefix).expand(x.shape[0], -1))]
        for position in range(prefix, x.shape[1]):
            steps.append(bottleneck(x[:, position : position + 1], torch.full((x.shape[0], 1), position)))
    return steps


def test_one_bottleneck_serves_two_policies_as_bottlenecks_built_with_them_do():
    # The policies are put in force on one trained bottleneck, one after the other; each must give
    # what a bottleneck built (as before serving policies) with that policy's settings gives.
    served = make(n_codes=64, top_k=4)
    x = torch.randn(3, 12, 16, generator=torch.Generator().manual_seed(3))
    popular = served(x).codes[:, 1:].flatten().bincount(minlength=64).topk(14).indices
    served.set_masked(popular)
    for settings in SERVED:
        served.serve(replace(ServingPolicy.of(served.config), **settings))
        built = make(n_codes=64, top_k=4, **settings)
        built.set_masked(popular)
        assert served.policy == ServingPolicy.of(built.config)
        for mine, theirs in zip(decoded(served, x), decoded(built, x), strict=True):
            assert torch.equal(mine.codes, theirs.codes), settings
            assert torch.equal(mine.hidden, theirs.hidden), settings
        assert torch.equal(served.code_ids(x[0]), built.code_ids(x[0]))
    assert served.config == make(n_codes=64, top_k=4).config  # the build config is never changed


def test_serving_state_is_neither_saved_nor_shared():
    source = make(n_codes=64, top_k=4)
    x = torch.randn(2, 10, 16)
    source.set_masked(source(x).codes[:, 1:, 0].unique())
    one, other = make(n_codes=64, top_k=4), make(n_codes=64, top_k=4)
    for bottleneck in (one, other):
        bottleneck.load_state_dict(source.state_dict())
    assert set(source.state_dict()) == {"codes", "mask"}  # weights and mask only
    one.serve(replace(one.policy, mask_policy="zero"))
    one.set_detectors([(torch.ones(16), 0.0)])
    assert other.policy == ServingPolicy.of(other.config) and other.policy.mask_policy == "next_best"
    assert torch.equal(other(x).codes, source(x).codes)  # next_best: refilled, as before `one` served
    assert not torch.equal(one(x).codes, other(x).codes)  # zero: emptied
    with pytest.raises(ConfigError, match="mask_gate=9"):
        one.serve(replace(one.policy, mask_gate=9))
    assert one.policy.mask_gate == 1  # a refused policy changes nothing
