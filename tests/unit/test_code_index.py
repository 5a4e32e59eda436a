"""The grouped code search: balanced groups, exactness when every group is probed, masks, caching."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from codeunlearn.core.config import BottleneckConfig, default_search_groups
from codeunlearn.core.errors import ConfigError
from codeunlearn.model.bottleneck import NO_CODE, CodebookBottleneck
from codeunlearn.model.code_index import balanced_groups, grouped_topk, index_codes
from codeunlearn.model.surgery import insert_bottleneck, load_codebook_model, save_codebook_model
from codeunlearn.unlearning.masks import apply_mask, mask_from_codes

from ..conftest import make_tiny


def unit(rows: int, width: int, seed: int) -> torch.Tensor:
    return F.normalize(torch.randn(rows, width, generator=torch.Generator().manual_seed(seed)), dim=-1)


@pytest.mark.parametrize(("n_codes", "n_groups"), [(1000, 32), (4096, 64), (100, 4), (64, 1)])
def test_groups_hold_every_code_once_in_equal_sizes(n_codes, n_groups):
    members = balanced_groups(unit(n_codes, 24, 0), n_groups)
    size = -(-n_codes // n_groups)
    assert members.shape == (n_groups, size)
    assert sorted(members[members >= 0].tolist()) == list(range(n_codes))
    assert (members < 0).sum() == n_groups * size - n_codes
    assert torch.equal(members, balanced_groups(unit(n_codes, 24, 0), n_groups))  # deterministic


@pytest.mark.parametrize(("n_codes", "n_groups", "tile"), [(1000, 32, 16), (4096, 64, 64), (100, 4, 16)])
def test_probing_every_group_is_exact_topk(n_codes, n_groups, tile):
    codes, tokens = unit(n_codes, 24, 0), unit(300, 24, 1)
    index = index_codes(codes, balanced_groups(codes, n_groups), None)
    exact = (tokens @ codes.T).topk(8, dim=-1).indices
    assert torch.equal(grouped_topk(tokens, index, 8, n_groups, tile), exact)


def test_probing_every_group_respects_the_mask_exactly():
    codes, tokens = unit(1000, 24, 0), unit(300, 24, 1)
    scores = tokens @ codes.T
    excluded = torch.zeros(1000, dtype=torch.bool)
    excluded[scores.topk(2, dim=-1).indices.flatten()] = True
    index = index_codes(codes, balanced_groups(codes, 32), excluded)
    expected = scores.masked_fill(excluded, float("-inf")).topk(8, dim=-1).indices
    assert torch.equal(grouped_topk(tokens, index, 8, 32, 16), expected)


def test_few_probes_find_the_codes_of_clustered_data():
    # 64 well-separated directions, 16 codes near each: a token near a direction finds its codes there
    centres = unit(64, 48, 2)
    codes = F.normalize(centres.repeat_interleave(16, 0) + 0.05 * unit(1024, 48, 3), dim=-1)
    tokens = F.normalize(centres[torch.arange(200) % 64] + 0.02 * unit(200, 48, 4), dim=-1)
    index = index_codes(codes, balanced_groups(codes, 64), None)
    exact = (tokens @ codes.T).topk(8, dim=-1).indices.sort(-1).values
    found = grouped_topk(tokens, index, 8, 8, 16).sort(-1).values
    assert (found == exact).all(-1).float().mean() >= 0.99


def test_fully_masked_groups_are_skipped_so_every_token_gets_usable_codes():
    codes, tokens = unit(256, 16, 0), unit(100, 16, 1)
    members = balanced_groups(codes, 16)
    excluded = torch.zeros(256, dtype=torch.bool)
    excluded[members[:12].flatten()] = True  # 12 of 16 groups wholly masked, 64 codes left
    index = index_codes(codes, members, excluded)
    found = grouped_topk(tokens, index, 8, 8, 16)
    assert not excluded[found].any()
    expected = (tokens @ codes.T).masked_fill(excluded, float("-inf")).topk(8, dim=-1).indices
    assert torch.equal(found.sort(-1).values, expected.sort(-1).values)  # the 4 usable groups are probed


def grouped(n_codes: int = 512, **overrides) -> CodebookBottleneck:
    torch.manual_seed(0)
    config = BottleneckConfig(**{"n_codes": n_codes, "top_k": 8, "search": "grouped", **overrides})
    return CodebookBottleneck(16, config)


def test_the_bottleneck_regroups_when_codes_change_but_not_while_holding_groups():
    bottleneck = grouped()
    h = torch.randn(50, 16)
    bottleneck.select(h)
    first = bottleneck._search.groups
    bottleneck.select(h)
    assert bottleneck._search.groups is first  # unchanged codes: no rebuild
    with bottleneck.holding_groups():
        bottleneck(h.view(5, 10, 16))  # a training forward (grad enabled): index rebuilt, groups held
        assert bottleneck._search.groups is first
        with torch.no_grad():
            bottleneck.codes.mul_(-1.0)
        negated = bottleneck.select(h)
        assert bottleneck._search.groups is first
        assert torch.equal(negated, grouped().select(-h))  # the index follows the codes' new values
        bottleneck.reset_codes(torch.arange(4), torch.randn(4, 16))  # re-seeding regroups
        bottleneck.select(h)
        assert bottleneck._search.groups is not first
    bottleneck.select(h)
    trained = bottleneck._search.groups
    fresh = grouped()
    fresh.load_state_dict(bottleneck.state_dict())
    fresh.select(h)
    assert torch.equal(trained, fresh._search.groups)  # after training, grouped as a loaded copy is


def test_a_fused_optimizer_step_is_seen_by_the_next_selection():
    bottleneck = grouped(search="exact", n_codes=64)
    optimizer = torch.optim.AdamW(bottleneck.parameters(), lr=0.5, fused=True)
    h = torch.randn(2, 20, 16)
    before = bottleneck.select(h[0])
    out = bottleneck(h)
    (out.hidden.pow(2).sum() + out.recon_error.sum()).backward()
    version = bottleneck.codes._version
    optimizer.step()  # fused AdamW writes the codes without bumping their version counter
    assert bottleneck.codes._version == version
    reference = grouped(search="exact", n_codes=64)
    reference.load_state_dict(bottleneck.state_dict())
    after = bottleneck.select(h[0])
    assert torch.equal(after, reference.select(h[0]))
    assert not torch.equal(after, before)


def test_grouped_search_with_all_groups_probed_equals_exact_in_the_bottleneck():
    exact = grouped(search="exact")
    everything = grouped(search_groups=16, search_probes=16)
    h = torch.randn(2, 30, 16)
    assert torch.equal(everything(h).codes, exact(h).codes)
    popular = exact(h).codes[:, 1:, :2].flatten().unique()
    exact.set_masked(popular)
    everything.set_masked(popular)
    assert torch.equal(everything(h).codes, exact(h).codes)


def test_save_load_round_trips_logits_with_grouped_search(tokenizer, tmp_path):
    config = BottleneckConfig(layer=1, n_codes=256, top_k=4, search="grouped", search_probes=4)
    codebook_model = insert_bottleneck(make_tiny("llama", len(tokenizer)), tokenizer, config, "t")
    apply_mask(codebook_model, mask_from_codes(256, "topic", [0, 5, 7]))
    ids = torch.randint(3, len(tokenizer), (2, 12), generator=torch.Generator().manual_seed(1))
    ids[:, 0] = 1
    with torch.no_grad():
        before = codebook_model.model(input_ids=ids).logits
    save_codebook_model(codebook_model, tmp_path / "model")
    loaded = load_codebook_model(tmp_path / "model")
    assert loaded.bottleneck.policy.search == "grouped"
    with torch.no_grad():
        assert torch.equal(loaded.model(input_ids=ids).logits, before)


def test_default_groups_are_about_sqrt_of_the_codes():
    assert default_search_groups(65536, 8) == 256
    assert default_search_groups(4096, 8) == 64
    assert default_search_groups(16, 8) == 2  # at least top_k codes a group


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"search": "fast"}, "search='fast'"),
        ({"search_groups": 48}, "search_groups=48"),
        ({"search_probes": 4}, "search_probes=4"),
        ({"search_probes": 128}, "search_probes=128"),
        ({"coarse_candidates": 32}, "coarse_candidates=32 applies to search='exact' only"),
    ],
)
def test_bad_search_settings_are_refused(overrides, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        grouped(**overrides)


def test_a_few_tokens_take_the_pairwise_path_with_the_same_result():
    codes, token = unit(1000, 24, 0), unit(1, 24, 1)
    excluded = torch.zeros(1000, dtype=torch.bool)
    excluded[::7] = True
    index = index_codes(codes, balanced_groups(codes, 32), excluded)
    pairwise = grouped_topk(token, index, 8, 8, 16)  # 8 pairs, at most half of 32 groups: gathered
    tiled = grouped_topk(token.repeat(4, 1), index, 8, 8, 16)  # 32 pairs: tiles
    assert torch.equal(pairwise[0], tiled[0]) and (tiled == tiled[0]).all()
    assert not excluded[pairwise].any()


def test_serving_a_search_switches_a_built_bottleneck_and_refuses_bad_settings():
    bottleneck = grouped(search="exact")
    h = torch.randn(40, 16)
    exact = bottleneck.select(h)
    every_group = replace(bottleneck.policy, search="grouped", search_probes=64, search_groups=64)
    bottleneck.serve(every_group)  # every group probed: same codes
    assert torch.equal(bottleneck.select(h), exact)
    bottleneck.serve(replace(bottleneck.policy, search_probes=8))
    bottleneck.select(h)
    assert bottleneck.policy.search_groups == 64 and bottleneck._search.groups.shape[0] == 64
    with pytest.raises(ConfigError, match="search_probes=4"):
        bottleneck.serve(replace(bottleneck.policy, search_probes=4))
    assert bottleneck.policy.search_probes == 8  # a refused switch changes nothing
    assert bottleneck.config.search == "exact"  # the build config is never changed


def test_the_pipeline_loads_a_model_with_the_configured_search(tokenizer, tmp_path):
    from codeunlearn.core.config import load_config
    from codeunlearn.model.loading import load_model

    config = BottleneckConfig(layer=1, n_codes=256, top_k=4)  # trained with exact search
    codebook_model = insert_bottleneck(make_tiny("llama", len(tokenizer)), tokenizer, config, "t")
    save_codebook_model(codebook_model, tmp_path / "model")
    overrides = [f"run_dir={tmp_path}", "bottleneck.n_codes=256", "bottleneck.top_k=4", "mining.n_select=8"]
    overrides += ["eval.sweep=[8]"]
    grouped_search = ["bottleneck.search=grouped", "bottleneck.search_probes=4"]
    served = load_model(load_config(None, [*overrides, *grouped_search]))
    assert (served.bottleneck.policy.search, served.bottleneck.policy.search_probes) == ("grouped", 4)
    assert load_model(load_config(None, overrides)).bottleneck.policy.search == "exact"
    zero = load_model(load_config(None, [*overrides, "bottleneck.mask_policy=zero"])).bottleneck
    assert zero.policy.mask_policy == "zero"
    zero.set_masked(torch.arange(8))
    h = torch.randn(32, zero.hidden_dim)
    assert (zero.code_ids(h)[zero.select(h) < 8] == NO_CODE).all()  # zero: masked slots stay empty
    with pytest.raises(ConfigError, match="mask_policy='skip'"):
        zero.serve(replace(zero.policy, mask_policy="skip"))
    assert zero.policy.mask_policy == "zero"
    gated_zero = ["bottleneck.mask_policy=zero", "bottleneck.mask_gate=2"]
    gated = load_model(load_config(None, [*overrides, *gated_zero]))
    assert gated.bottleneck.policy.mask_gate == 2
