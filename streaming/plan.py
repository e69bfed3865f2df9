"""Epoch planning: which items each (rank, worker) yields, and in which order. Pure numpy.

An *item* is what the dataset yields: one per sample in chunk and clip modes, one per
timeline segment in segment mode. The plan for an epoch is a function of the manifest's
counts, the epoch, the seed and the world shape only:

1. shards are permuted with rng([seed, epoch, 1]); their items, in file order, form the
   epoch's item sequence (reading stays sequential inside a shard);
2. rank r takes the contiguous block [r*n, (r+1)*n) of that sequence, n = total // R with
   drop_last (at most R-1 items dropped), else ceil(total / R) with positions past the end
   wrapping to the start (padding, flagged): every rank yields exactly n items;
3. worker w of W takes a contiguous slice of its rank's block (sizes differ by at most 1);
4. the slice is cut into windows of whole samples whose encoded bytes fit the shuffle
   buffer, and each window's items are permuted with rng([seed, epoch, 2, first position]).

A window is the unit of memory: its samples' bytes are held while its items are decoded.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from .world import World

_SHARD_STREAM, _WINDOW_STREAM = 1, 2


@dataclasses.dataclass(frozen=True, kw_only=True)
class Catalog:
    """Per shard, per sample (file order): items and encoded bytes. From index.json."""

    sample_items: list[np.ndarray]
    sample_bytes: list[np.ndarray]

    @property
    def total_items(self) -> int:
        return int(sum(int(a.sum()) for a in self.sample_items))


@dataclasses.dataclass(frozen=True, kw_only=True)
class EpochOrder:
    """The epoch's item sequence: for item i, its shard, sample in shard and sub-item."""

    shard: np.ndarray
    sample: np.ndarray
    sub: np.ndarray

    def __len__(self) -> int:
        return len(self.shard)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Window:
    """Items of consecutive samples, in yield order; `padded` marks repeated items."""

    positions: np.ndarray  # positions in the epoch order (after wrapping), yield order
    padded: np.ndarray  # bool, same length

    def samples(self, order: EpochOrder) -> list[tuple[int, int]]:
        """(shard, sample) pairs to read, in file order."""
        pos = np.sort(self.positions)
        pairs = zip(order.shard[pos].tolist(), order.sample[pos].tolist())
        return list(dict.fromkeys(pairs))


def epoch_order(catalog: Catalog, epoch: int, seed: int, shuffle: bool) -> EpochOrder:
    n = len(catalog.sample_items)
    shards = np.random.default_rng([seed, epoch, _SHARD_STREAM]).permutation(n) if shuffle else np.arange(n)
    parts_shard, parts_sample, parts_sub = [], [], []
    for s in shards:
        counts = catalog.sample_items[s]
        total = int(counts.sum())
        sample = np.repeat(np.arange(len(counts)), counts)
        starts = np.repeat(np.cumsum(counts) - counts, counts)
        parts_shard.append(np.full(total, s, dtype=np.int64))
        parts_sample.append(sample)
        parts_sub.append(np.arange(total) - starts)
    cat = (lambda parts: np.concatenate(parts).astype(np.int64)) if n else (lambda parts: np.zeros(0, np.int64))
    return EpochOrder(shard=cat(parts_shard), sample=cat(parts_sample), sub=cat(parts_sub))


def items_per_rank(total: int, world_size: int, drop_last: bool) -> int:
    return total // world_size if drop_last else -(-total // world_size)


def rank_block(total: int, rank: int, world_size: int, drop_last: bool) -> tuple[np.ndarray, np.ndarray]:
    """(positions, padded) of rank's block of the epoch sequence."""
    n = items_per_rank(total, world_size, drop_last)
    raw = np.arange(rank * n, (rank + 1) * n, dtype=np.int64)
    if total == 0:
        return raw[:0], np.zeros(0, dtype=bool)
    return raw % total, raw >= total


def worker_slice(n: int, worker: int, num_workers: int) -> slice:
    """Contiguous, balanced: slice sizes differ by at most one."""
    return slice(worker * n // num_workers, (worker + 1) * n // num_workers)


def cut_windows(
    positions: np.ndarray, padded: np.ndarray, order: EpochOrder, catalog: Catalog, buffer_bytes: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Group consecutive positions into windows of whole samples fitting buffer_bytes."""
    if len(positions) == 0:
        return []
    shard, sample = order.shard[positions], order.sample[positions]
    new_sample = np.ones(len(positions), dtype=bool)
    new_sample[1:] = (shard[1:] != shard[:-1]) | (sample[1:] != sample[:-1])
    starts = np.flatnonzero(new_sample)
    sizes = [int(catalog.sample_bytes[shard[i]][sample[i]]) for i in starts]
    cuts, used = [], 0
    for start, size in zip(starts.tolist(), sizes):
        if used and used + size > buffer_bytes:
            cuts.append(start)
            used = 0
        used += size
    bounds = [0, *cuts, len(positions)]
    return [(positions[a:b], padded[a:b]) for a, b in zip(bounds, bounds[1:])]


def worker_windows(
    catalog: Catalog, order: EpochOrder, world: World, *, epoch: int, seed: int, shuffle: bool, drop_last: bool, buffer_bytes: int
) -> list[Window]:
    """The windows one (rank, worker) yields this epoch, items permuted inside each."""
    positions, padded = rank_block(len(order), world.rank, world.world_size, drop_last)
    part = worker_slice(len(positions), world.worker, world.num_workers)
    windows = []
    for pos, pad in cut_windows(positions[part], padded[part], order, catalog, buffer_bytes):
        if shuffle:
            perm = np.random.default_rng([seed, epoch, _WINDOW_STREAM, int(pos[0]), int(pad[0])]).permutation(len(pos))
            pos, pad = pos[perm], pad[perm]
        windows.append(Window(positions=pos, padded=pad))
    return windows
