"""Epoch planning: which items each (rank, worker) yields, and in which order. Pure numpy.

An *item* is what the dataset yields: one per sample in chunk and clip modes, one per
timeline segment in segment mode. A fresh epoch's plan is a function of the manifest's
counts, the epoch, the seed and the world shape only:

1. shards are permuted with rng([seed, epoch, 1]); their items, in file order, form the
   epoch's item sequence (reading stays sequential inside a shard);
2. rank r takes the contiguous block [r*n, (r+1)*n) of that sequence, n = total // R with
   drop_last (at most R-1 items dropped), else ceil(total / R) with positions past the end
   wrapping to the start (padding, flagged): every rank yields exactly n items;
3. worker w of W takes a contiguous slice of its rank's block (sizes differ by at most 1);
4. the slice is cut into windows of whole samples whose encoded bytes fit the shuffle
   buffer, and each window's items are permuted with rng([seed, epoch, 2, first position]).

A resumed epoch (`Progress`: a plan spec plus how many items each of its (rank, worker)
partitions had yielded) is a plan too: the items its partitions had not yet yielded, in
their yield order, are split by steps 2-3 over the new world, and kept grouped by the
window they came from (so a worker again holds one window's samples at a time).
"""

from __future__ import annotations

import dataclasses
from typing import Any

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
    """Items of a few consecutive samples, in yield order; `padded` marks repeated items."""

    positions: np.ndarray  # positions in the epoch order, yield order
    padded: np.ndarray  # bool, same length

    def samples(self, order: EpochOrder) -> list[tuple[int, int]]:
        """(shard, sample) pairs to read, in file order."""
        pos = np.sort(self.positions)
        return list(dict.fromkeys(zip(order.shard[pos].tolist(), order.sample[pos].tolist())))


@dataclasses.dataclass(frozen=True, kw_only=True)
class PlanSpec:
    """Everything that decides an epoch's plan besides the catalog."""

    epoch: int
    seed: int
    shuffle: bool
    drop_last: bool
    buffer_bytes: int
    world_size: int
    num_workers: int
    base: Progress | None = None  # the interrupted plan this one continues, if any

    def to_json(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "base": self.base.to_json() if self.base else None}

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> PlanSpec:
        return cls(**{**obj, "base": Progress.from_json(obj["base"]) if obj.get("base") else None})


@dataclasses.dataclass(frozen=True, kw_only=True)
class Progress:
    """How far each (rank, worker) partition of a plan got: the whole resume state."""

    spec: PlanSpec
    yielded: dict[tuple[int, int], int]  # (rank, worker) -> items delivered

    def to_json(self) -> dict[str, Any]:
        return {"spec": self.spec.to_json(), "yielded": [[r, w, k] for (r, w), k in sorted(self.yielded.items())]}

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Progress:
        return cls(spec=PlanSpec.from_json(obj["spec"]), yielded={(r, w): k for r, w, k in obj["yielded"]})


def epoch_order(catalog: Catalog, epoch: int, seed: int, shuffle: bool) -> EpochOrder:
    n = len(catalog.sample_items)
    shards = np.random.default_rng([seed, epoch, _SHARD_STREAM]).permutation(n) if shuffle else np.arange(n)
    per_shard = [catalog.sample_items[s] for s in shards]
    lengths = np.array([len(c) for c in per_shard], dtype=np.int64)
    counts = np.concatenate(per_shard).astype(np.int64) if n else np.zeros(0, np.int64)
    shard_of_sample = np.repeat(shards.astype(np.int64), lengths)
    sample_in_shard = np.arange(len(counts)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    item_sample = np.repeat(np.arange(len(counts)), counts)
    sub = np.arange(len(item_sample)) - np.repeat(np.cumsum(counts) - counts, counts)
    return EpochOrder(shard=shard_of_sample[item_sample], sample=sample_in_shard[item_sample], sub=sub)


def items_per_rank(total: int, world_size: int, drop_last: bool) -> int:
    return total // world_size if drop_last else -(-total // world_size)


def rank_block(total: int, rank: int, world_size: int, drop_last: bool) -> tuple[np.ndarray, np.ndarray]:
    """(indices into a sequence of `total`, padded) of rank's block."""
    n = items_per_rank(total, world_size, drop_last)
    raw = np.arange(rank * n, (rank + 1) * n, dtype=np.int64)
    if total == 0:
        return raw[:0], np.zeros(0, dtype=bool)
    return raw % total, raw >= total


def worker_slice(n: int, worker: int, num_workers: int) -> slice:
    """Contiguous, balanced: slice sizes differ by at most one."""
    return slice(worker * n // num_workers, (worker + 1) * n // num_workers)


def cut_windows(positions: np.ndarray, order: EpochOrder, catalog: Catalog, buffer_bytes: int) -> list[int]:
    """Cut points (indices into `positions`) making windows of whole samples that fit."""
    if len(positions) == 0:
        return []
    shard, sample = order.shard[positions], order.sample[positions]
    new_sample = np.ones(len(positions), dtype=bool)
    new_sample[1:] = (shard[1:] != shard[:-1]) | (sample[1:] != sample[:-1])
    starts = np.flatnonzero(new_sample)
    cuts, used = [], 0
    for start in starts.tolist():
        size = int(catalog.sample_bytes[shard[start]][sample[start]])
        if used and used + size > buffer_bytes:
            cuts.append(start)
            used = 0
        used += size
    return cuts


def _split(values: np.ndarray, cuts: list[int]) -> list[np.ndarray]:
    if len(values) == 0:
        return []
    bounds = [0, *cuts, len(values)]
    return [values[a:b] for a, b in zip(bounds, bounds[1:])]


def worker_windows(catalog: Catalog, order: EpochOrder, spec: PlanSpec, rank: int, worker: int) -> list[Window]:
    """The windows one (rank, worker) yields under `spec`, in yield order."""
    if spec.base is not None:
        return _resumed_windows(catalog, order, spec, rank, worker)
    block, padded = rank_block(len(order), rank, spec.world_size, spec.drop_last)
    part = worker_slice(len(block), worker, spec.num_workers)
    positions, padded = block[part], padded[part]
    cuts = cut_windows(positions, order, catalog, spec.buffer_bytes)
    windows = []
    for pos, pad in zip(_split(positions, cuts), _split(padded, cuts)):
        if spec.shuffle:
            perm = np.random.default_rng([spec.seed, spec.epoch, _WINDOW_STREAM, int(pos[0]), int(pad[0])]).permutation(len(pos))
            pos, pad = pos[perm], pad[perm]
        windows.append(Window(positions=pos, padded=pad))
    return windows


def remaining(catalog: Catalog, order: EpochOrder, progress: Progress) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(positions, padded, window id) of the items `progress`'s partitions had not yielded,
    in their yield order. Padding of the old plan is dropped: the new split pads anew."""
    spec = progress.spec
    parts_pos, parts_window = [], []
    window_id = 0
    for rank in range(spec.world_size):
        for worker in range(spec.num_workers):
            skip = progress.yielded.get((rank, worker), 0)
            for window in worker_windows(catalog, order, spec, rank, worker):
                n = len(window.positions)
                keep = ~window.padded[skip:] if skip < n else np.zeros(0, dtype=bool)
                parts_pos.append(window.positions[skip:][keep])
                parts_window.append(np.full(int(keep.sum()), window_id, dtype=np.int64))
                skip = max(0, skip - n)
                window_id += 1
    if not parts_pos:
        return np.zeros(0, np.int64), np.zeros(0, bool), np.zeros(0, np.int64)
    positions = np.concatenate(parts_pos)
    return positions, np.zeros(len(positions), dtype=bool), np.concatenate(parts_window)


def _resumed_windows(catalog: Catalog, order: EpochOrder, spec: PlanSpec, rank: int, worker: int) -> list[Window]:
    positions, _, window_ids = remaining(catalog, order, spec.base)
    index, padded = rank_block(len(positions), rank, spec.world_size, spec.drop_last)
    part = worker_slice(len(index), worker, spec.num_workers)
    index, padded = index[part], padded[part]
    ids = window_ids[index]
    cuts = (np.flatnonzero(ids[1:] != ids[:-1]) + 1).tolist()
    return [Window(positions=p, padded=d) for p, d in zip(_split(positions[index], cuts), _split(padded, cuts))]


def plan_items(catalog: Catalog, spec: PlanSpec) -> int:
    """Items every rank yields under `spec`."""
    if spec.base is None:
        total = catalog.total_items
    else:
        order = epoch_order(catalog, spec.epoch, spec.seed, spec.shuffle)
        total = len(remaining(catalog, order, spec.base)[0])
    return items_per_rank(total, spec.world_size, spec.drop_last)


def skip_items(windows: list[Window], count: int) -> list[Window]:
    """The windows left after the first `count` items were delivered."""
    kept = []
    for window in windows:
        n = len(window.positions)
        if count >= n:
            count -= n
            continue
        kept.append(Window(positions=window.positions[count:], padded=window.padded[count:]))
        count = 0
    return kept


def world_windows(catalog: Catalog, spec: PlanSpec, world: World) -> tuple[EpochOrder, list[Window]]:
    order = epoch_order(catalog, spec.epoch, spec.seed, spec.shuffle)
    return order, worker_windows(catalog, order, spec, world.rank, world.worker)
