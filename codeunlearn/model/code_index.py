"""A grouped index over the codes: top-k search that scores a few groups of codes, not all C.

Exact search costs 2·C·e FLOPs per token and a top-k over C-wide rows: at C = 65,536 and e = 576 that
is about a quarter of a SmolLM2-135M forward pass. The index splits the codes into G groups of S codes
(a balanced tree of principal-direction splits, then balanced k-means passes); a token scores the G
group centroids, keeps its P best groups and scores only their P·S codes: 2·(G + P·S)·e FLOPs, and
top-k over S-wide rows. It can miss a true top-k code that sits in a group outside the token's P best;
bench/bench_search_quality.py measures how often on a trained model, and what it costs in NLL.

Everything is batched tensor work with shapes fixed by (n, P, G, S), so a search never waits for the
device. Shapes: n tokens, e code width, C codes, G groups, S codes per group, P probed groups per
token, L pairs per tile, k codes chosen.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

_POWER_ITERATIONS = 12
_REFINE_ITERATIONS = 4  # balanced k-means passes after the tree
_AUCTION_ROUNDS = 32


@dataclass(frozen=True)
class CodeIndex:
    """Codes laid out by group, at the codes' current values."""

    members: torch.Tensor  # (G, S) int64 code ids; padding slots hold 0 and are always excluded
    centroids: torch.Tensor  # (G, e) unit mean direction of each group's usable codes
    grouped: torch.Tensor  # (G, S, e) unit codes, zero at padding slots
    excluded: torch.Tensor  # (G, S) bool: padding, or masked under next_best

    @property
    def group_size(self) -> int:
        return self.members.shape[1]


@torch.no_grad()
def balanced_groups(units: torch.Tensor, n_groups: int) -> torch.Tensor:
    """Split C unit codes (C, e) into n_groups (a power of two) groups of equal size S = ceil(C / G).

    A tree first halves every group at the median of its codes' projection on the group's principal
    direction; balanced k-means passes then move codes to their nearest centroid with room, since
    median cuts often split a natural cluster. Deterministic: the power iteration starts from a fixed
    vector. Returns (G, S) code ids, -1 at the G·S - C padding slots.
    """
    n_codes, width = units.shape
    size = math.ceil(n_codes / n_groups)
    padded = torch.cat([units.float(), units.new_zeros(n_groups * size - n_codes, width).float()])
    ids = torch.cat([torch.arange(n_codes), torch.full((n_groups * size - n_codes,), -1)]).to(units.device)
    vectors, ids = padded.unsqueeze(0), ids.unsqueeze(0)  # (1, G·S, e), (1, G·S)
    start = torch.randn(width, generator=torch.Generator().manual_seed(0)).to(units.device)
    for _ in range(int(math.log2(n_groups))):
        centred = vectors - vectors.mean(dim=1, keepdim=True)  # (B, m, e)
        direction = _principal_directions(centred, start)  # (B, e)
        order = torch.einsum("bme,be->bm", centred, direction).argsort(dim=1, stable=True)
        vectors = vectors.gather(1, order.unsqueeze(-1).expand_as(vectors))
        ids = ids.gather(1, order)
        halves = vectors.shape[1] // 2
        vectors = vectors.reshape(-1, halves, width)
        ids = ids.reshape(-1, halves)
    for _ in range(_REFINE_ITERATIONS):
        ids = _balanced_assignment(units.float(), ids)
    return ids


def _balanced_assignment(units: torch.Tensor, members: torch.Tensor) -> torch.Tensor:
    """One balanced k-means pass: codes (C, e) go to their most similar centroid of `members` (G, S)
    that has room, by rounds of an auction (each unplaced code bids for its best open group; a group
    takes its best bidders up to its room, then closes if full). Codes still unplaced after the last
    round fill the slots left, in id order."""
    n_groups, size = members.shape
    n_codes = units.shape[0]
    safe = members.clamp_min(0)
    centroids = F.normalize(units[safe].masked_fill((members < 0).unsqueeze(-1), 0.0).sum(1), dim=-1)
    scores = units @ centroids.T  # (C, G)
    room = torch.full((n_groups,), size, dtype=torch.long, device=units.device)
    room -= (members < 0).sum(1)  # padding keeps its slots
    group_of = torch.full((n_codes,), -1, dtype=torch.long, device=units.device)
    for _ in range(_AUCTION_ROUNDS):
        open_scores = scores.masked_fill((room == 0).unsqueeze(0), float("-inf"))
        unplaced = group_of < 0
        bid_score, bid_group = open_scores.max(dim=1)
        bid_score = bid_score.masked_fill(~unplaced, float("-inf"))
        order = torch.argsort(bid_score, descending=True, stable=True)  # best bids first
        order = order[torch.argsort(bid_group[order], stable=True)]  # grouped, best first within
        sorted_group = bid_group[order]
        _, rank = _rank_in_groups(sorted_group, n_groups)  # unplaced codes come first in each group
        accepted = unplaced[order] & (rank < room[sorted_group])
        group_of[order[accepted]] = sorted_group[accepted]
        room -= torch.zeros_like(room).index_add_(0, sorted_group[accepted], torch.ones_like(rank[accepted]))
        if not bool((group_of < 0).any()):
            break
    return _members_from(group_of, members, size)


def _members_from(group_of: torch.Tensor, members: torch.Tensor, size: int) -> torch.Tensor:
    """(G, S) ids from each code's group (C,) (-1: unplaced, put in the free slots), padding kept."""
    n_groups = members.shape[0]
    padding = (members < 0).sum(1)
    left = torch.nonzero(group_of < 0).flatten()
    if left.numel():  # free slots of group g: size - padding[g] - placed[g]
        placed = torch.bincount(group_of[group_of >= 0], minlength=n_groups)
        free = size - padding - placed
        group_of = group_of.clone()
        slots = torch.repeat_interleave(torch.arange(n_groups, device=free.device), free)
        group_of[left] = slots[: left.numel()]
    order = torch.argsort(group_of, stable=True)  # codes by group, then id
    rows = [order.new_full((int(p),), -1) for p in padding.tolist()]
    counts = torch.bincount(group_of, minlength=n_groups).tolist()
    pieces = order.split(counts)
    return torch.stack([torch.cat([piece, pad]) for piece, pad in zip(pieces, rows, strict=True)])


def _principal_directions(centred: torch.Tensor, start: torch.Tensor) -> torch.Tensor:
    """Top principal direction of each batch row's vectors, by power iteration. (B, m, e) -> (B, e)"""
    direction = start.expand(centred.shape[0], -1)
    for _ in range(_POWER_ITERATIONS):
        scores = torch.einsum("bme,be->bm", centred, direction)
        direction = F.normalize(torch.einsum("bme,bm->be", centred, scores), dim=-1)
    return direction


@torch.no_grad()
def index_codes(units: torch.Tensor, members: torch.Tensor, excluded: torch.Tensor | None) -> CodeIndex:
    """The index of unit codes (C, e) grouped as `members` (G, S), with `excluded` (C,) codes unusable."""
    padding = members < 0
    safe = members.clamp_min(0)
    unusable = padding if excluded is None else padding | excluded[safe]
    grouped = units[safe].masked_fill(padding.unsqueeze(-1), 0.0)  # (G, S, e)
    usable_sum = grouped.masked_fill(unusable.unsqueeze(-1), 0.0).sum(dim=1)
    return CodeIndex(safe, F.normalize(usable_sum, dim=-1), grouped, unusable)


def tile_size(n_pairs: int, n_groups: int, group_size: int) -> int:
    """L: about the mean pairs per group (a power of two, 16 to S), so the at most G partly filled
    tiles waste few rows when pairs are few, and few tiles copy their group's codes when they are many."""
    mean = max(1, n_pairs // n_groups)
    return max(16, min(group_size, 2 ** math.ceil(math.log2(mean))))


def chunk_tokens(chunk: int, n_groups: int, group_size: int, probes: int) -> int:
    """Tokens per grouped search: at least `chunk`, and enough that the G partly filled tiles of S
    rows are at most a quarter of the n·P rows of real pairs."""
    return max(chunk, math.ceil(4 * n_groups * group_size / probes))


def grouped_topk(units: torch.Tensor, index: CodeIndex, top_k: int, probes: int, tile: int) -> torch.Tensor:
    """Ids of the top_k codes by cosine among each token's `probes` best groups.

    Token-group pairs are sorted by group and cut into tiles of `tile` pairs of one group, so one
    batched matmul scores every tile against its group's codes. The tile count is bounded by
    ceil(n·P / L) + G whatever the pairs, which keeps every shape fixed. With at most half as many
    pairs as groups (a decoding step), each pair's codes are gathered instead, which reads fewer of them.

    Args:
        units: (n, e) unit vectors.
    Returns:
        (n, top_k) int64 ids, most similar first. A group with no usable code is never probed, so
        with probes >= top_k every token gets top_k usable codes.
    """
    n_tokens = units.shape[0]
    n_groups, size = index.members.shape
    group_scores = units @ index.centroids.T.to(units.dtype)  # (n, G)
    group_scores.masked_fill_(index.excluded.all(dim=1), float("-inf"))
    probed = group_scores.topk(probes, dim=-1).indices.flatten()  # (n·P,) group of each pair
    if 2 * probed.shape[0] <= n_groups:  # a few tokens (decoding): gather each pair's codes, which
        # reads at most half the codebook; past that, tiles read each probed group's codes once
        values, ids = _pairwise_topk(units, index, probed, probes, top_k)
    else:
        values, ids = _tiled_topk(units, index, probed, probes, top_k, tile)
    best = values.view(n_tokens, -1).topk(top_k, dim=-1).indices  # (n, k) among P·k' candidates
    return ids.view(n_tokens, -1).gather(1, best)


def _pairwise_topk(
    units: torch.Tensor, index: CodeIndex, probed: torch.Tensor, probes: int, top_k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top codes of each token-group pair (n·P, k'), each pair's S codes gathered: for few pairs."""
    pair_units = units.repeat_interleave(probes, 0).unsqueeze(-1)  # (n·P, e, 1)
    scores = torch.bmm(index.grouped[probed].to(units.dtype), pair_units)  # (n·P, S, 1)
    scores = scores.squeeze(-1).masked_fill(index.excluded[probed], float("-inf"))  # (n·P, S)
    values, slots = scores.topk(min(top_k, index.group_size), dim=-1)
    return values, index.members[probed].gather(1, slots)


def _tiled_topk(
    units: torch.Tensor, index: CodeIndex, probed: torch.Tensor, probes: int, top_k: int, tile: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top codes of each token-group pair (n·P, k'): pairs sorted by group and cut into tiles of one
    group each, so one batched matmul scores every tile against its group's codes."""
    n_groups, size = index.members.shape
    by_group = probed.argsort(stable=True)
    tile_of, slot_of, tile_group = _tiles(probed[by_group], n_groups, tile)
    pairs = units.new_zeros(tile_group.shape[0], tile, units.shape[1])  # (tiles, L, e)
    pairs[tile_of, slot_of] = units[by_group // probes]
    scores = torch.bmm(pairs, index.grouped[tile_group].transpose(1, 2).to(units.dtype))  # (tiles, L, S)
    scores.masked_fill_(index.excluded[tile_group].unsqueeze(1), float("-inf"))
    values, slots = scores.topk(min(top_k, size), dim=-1)  # (tiles, L, k')
    slots = slots[tile_of, slot_of]  # (n·P, k'), pairs in sorted order
    pair_values = values.new_empty(slots.shape)  # back in token order
    pair_values[by_group] = values[tile_of, slot_of]
    pair_ids = torch.empty_like(slots)
    pair_ids[by_group] = index.members[tile_group[tile_of]].gather(1, slots)
    return pair_values, pair_ids


def _tiles(sorted_groups: torch.Tensor, n_groups: int, tile: int) -> tuple[torch.Tensor, ...]:
    """For pairs sorted by group (N,): each pair's tile and slot, and each tile's group (T_max,)."""
    n_pairs = sorted_groups.shape[0]
    device = sorted_groups.device
    counts, rank = _rank_in_groups(sorted_groups, n_groups)
    tiles_per_group = (counts + tile - 1) // tile
    tile_ends = tiles_per_group.cumsum(0)
    tile_of = (tile_ends - tiles_per_group)[sorted_groups] + rank // tile
    max_tiles = math.ceil(n_pairs / tile) + n_groups
    tile_group = torch.searchsorted(tile_ends, torch.arange(max_tiles, device=device), right=True)
    return tile_of, rank % tile, tile_group.clamp_max(n_groups - 1)


def _rank_in_groups(sorted_groups: torch.Tensor, n_groups: int) -> tuple[torch.Tensor, torch.Tensor]:
    """For items sorted by group (N,): how many each group holds (G,) and each item's place in it (N,)."""
    counts = torch.zeros(n_groups, dtype=torch.long, device=sorted_groups.device)
    counts.index_add_(0, sorted_groups, torch.ones_like(sorted_groups))  # no bincount: it syncs on CUDA
    starts = counts.cumsum(0) - counts  # first position of each group
    return counts, torch.arange(sorted_groups.shape[0], device=sorted_groups.device) - starts[sorted_groups]
