"""Windows: what one worker reads and holds at once, and the order it yields them in.

A worker's items (a contiguous slice of the plan's sequence) are cut greedily into windows
of whole samples whose encoded bytes fit the shuffle buffer (a sample larger than the buffer
is a window alone); each window's items are permuted with
`rng([seed, epoch, 2, first position, padded(, depth)])`.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from .order import Catalog, EpochOrder

_WINDOW_STREAM = 2


@dataclasses.dataclass(frozen=True, kw_only=True)
class Window:
    """Items of a few samples, in yield order; `padded` marks repeated items."""

    positions: np.ndarray  # positions in the epoch order, yield order
    padded: np.ndarray  # bool, same length

    def samples(self, order: EpochOrder) -> list[tuple[int, int]]:
        """(shard, sample) pairs to read: a shard's samples together in file order, so that
        neighbours come out as runs (one read each); shards in the order the epoch's sequence
        reaches them, so a node's cache does not see the same cyclic shard order every
        window and every epoch (least-recently-used eviction's worst case)."""
        pos = np.sort(self.positions)
        shard, sample = order.shard[pos], order.sample[pos]
        shards, first = np.unique(shard, return_index=True)
        reached = first[np.searchsorted(shards, shard)]  # where the sequence first reaches each item's shard
        keep = np.lexsort((sample, reached))
        shard, sample = shard[keep], sample[keep]
        new = np.ones(len(shard), dtype=bool)
        new[1:] = (shard[1:] != shard[:-1]) | (sample[1:] != sample[:-1])
        return list(zip(shard[new].tolist(), sample[new].tolist()))


def _sample_runs(positions: np.ndarray, order: EpochOrder, catalog: Catalog) -> tuple[np.ndarray, np.ndarray]:
    """(index where each run of one sample's items starts, bytes before each run and in all)."""
    shard, sample = order.shard[positions], order.sample[positions]
    new = np.ones(len(positions), dtype=bool)
    new[1:] = (shard[1:] != shard[:-1]) | (sample[1:] != sample[:-1])
    first = np.flatnonzero(new)
    return first, np.concatenate([[0], np.cumsum(catalog.nbytes(shard[first], sample[first]))])


def _next(cum: np.ndarray, i: int, buffer_bytes: int) -> int:
    """The run after the window that starts at run i: greedy, whole samples, at least one."""
    return max(i + 1, int(np.searchsorted(cum, cum[i] + buffer_bytes, side="right")) - 1)


def window_starts(positions: np.ndarray, order: EpochOrder, catalog: Catalog, buffer_bytes: int) -> np.ndarray:
    """Indices into `positions` where windows start (the first is 0)."""
    if len(positions) == 0:
        return np.zeros(0, np.int64)
    first, cum = _sample_runs(positions, order, catalog)
    starts, i = [], 0
    while i < len(first):  # one step per window
        starts.append(i)
        i = _next(cum, i, buffer_bytes)
    return first[starts]


def window_around(positions: np.ndarray, index: int, order: EpochOrder, catalog: Catalog, buffer_bytes: int) -> tuple[int, int]:
    """`[start, end)` (indices into `positions`) of the window holding item `index`."""
    first, cum = _sample_runs(positions, order, catalog)
    limit = int(np.searchsorted(first, index, side="right"))
    i = 0
    while True:
        j = _next(cum, i, buffer_bytes)
        if j >= limit:
            return int(first[i]), int(first[j]) if j < len(first) else len(positions)
        i = j


def shuffled(positions: np.ndarray, padded: np.ndarray, *, seed: int, epoch: int, depth: int) -> np.ndarray:
    """The yield order of one window: a permutation of range(len(positions))."""
    key = [seed, epoch, _WINDOW_STREAM, int(positions[0]), int(padded[0])] + ([depth] if depth else [])
    return np.random.default_rng(key).permutation(len(positions))


def cut(positions: np.ndarray, padded: np.ndarray, starts: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    bounds = [*starts.tolist(), len(positions)]
    return [(positions[a:b], padded[a:b]) for a, b in zip(bounds, bounds[1:])]
