"""A fresh epoch's item sequence and its split over ranks and workers. Pure numpy.

An *item* is what the dataset yields: one per sample in chunk and clip modes, one per
timeline segment in segment mode. The sequence is a function of the manifest's counts and
sizes, the epoch, the seed and the block size only:

- each shard's samples are grouped into *blocks*: the samples that start inside the same
  `[k * block_bytes, (k + 1) * block_bytes)` of the shard's bytes (so a sample larger than
  `block_bytes` ends its block, though smaller samples before it in the same range share
  it); `block_bytes=None` makes each shard one block;
- the blocks of the whole dataset are permuted with `rng([seed, epoch, 1])`; their items,
  in file order inside each block, form the epoch's sequence.

A block is the unit the shuffle moves and, later, one read (a stream): samples of one block
always stay neighbours, samples of different blocks meet by chance each epoch.
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np

_BLOCK_STREAM = 1


@dataclasses.dataclass(frozen=True, kw_only=True)
class Catalog:
    """Per shard, per sample (file order): items and encoded bytes. From index.json."""

    sample_items: list[np.ndarray]
    sample_bytes: list[np.ndarray]

    @property
    def total_items(self) -> int:
        return int(self.items.sum())

    @functools.cached_property
    def lengths(self) -> np.ndarray:
        """Samples per shard."""
        return np.array([len(a) for a in self.sample_items], dtype=np.int64)

    @functools.cached_property
    def first_sample(self) -> np.ndarray:
        """Index of each shard's first sample in the flat (shard-major) sample arrays."""
        return np.cumsum(self.lengths) - self.lengths

    @functools.cached_property
    def items(self) -> np.ndarray:
        return _flat(self.sample_items)

    @functools.cached_property
    def sizes(self) -> np.ndarray:
        return _flat(self.sample_bytes)

    def nbytes(self, shard: np.ndarray, sample: np.ndarray) -> np.ndarray:
        """Encoded bytes of the given (shard, sample) pairs."""
        return self.sizes[self.first_sample[shard] + sample]


def _flat(arrays: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(arrays).astype(np.int64) if arrays else np.zeros(0, np.int64)


@dataclasses.dataclass(frozen=True, kw_only=True)
class EpochOrder:
    """The epoch's item sequence: for item i, its shard, sample in shard and sub-item."""

    shard: np.ndarray
    sample: np.ndarray
    sub: np.ndarray

    def __len__(self) -> int:
        return len(self.shard)


def blocks(catalog: Catalog, block_bytes: int | None) -> np.ndarray:
    """Block id of every sample (flat, shard-major); ids count up in file order."""
    lengths = catalog.lengths
    shard_of = np.repeat(np.arange(len(lengths)), lengths)
    if block_bytes is None:
        return shard_of  # one block per shard, empty shards included (shuffle_block="shard")
    if block_bytes < 1:
        raise ValueError(f"block_bytes must be >= 1 or None, got {block_bytes}")
    sizes = catalog.sizes
    # bytes before each sample inside its shard
    before = np.cumsum(sizes) - sizes
    offset = before - np.repeat(before[catalog.first_sample[lengths > 0]], lengths[lengths > 0])
    slot = offset // block_bytes
    new = np.ones(len(sizes), dtype=bool)
    new[1:] = (shard_of[1:] != shard_of[:-1]) | (slot[1:] != slot[:-1])
    return np.cumsum(new) - 1


def epoch_order(catalog: Catalog, *, epoch: int, seed: int, shuffle: bool, block_bytes: int | None) -> EpochOrder:
    block_of = blocks(catalog, block_bytes)
    nblocks = int(block_of[-1]) + 1 if block_bytes is not None and len(block_of) else len(catalog.lengths)
    if shuffle:
        # Blocks are runs of the flat sample array: lay the permuted runs end to end.
        perm = np.random.default_rng([seed, epoch, _BLOCK_STREAM]).permutation(nblocks)
        size = np.bincount(block_of, minlength=nblocks)
        start = np.cumsum(size) - size
        run = size[perm]
        samples = np.repeat(start[perm] - (np.cumsum(run) - run), run) + np.arange(int(run.sum()))
    else:
        samples = np.arange(len(block_of))
    item_sample, shard_of, in_shard, sub = item_coordinates(catalog, samples)
    return EpochOrder(shard=shard_of[item_sample], sample=in_shard[item_sample], sub=sub)


def item_coordinates(catalog: Catalog, samples: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The items of `samples` (flat sample numbers, in this order), each sample's items in
    turn: (per item, its sample's place in `samples`; per sample, its shard and its place in
    the shard; per item, its place among its sample's items). The epoch order and the map
    index (`mapindex.py`) both number items this way."""
    lengths = catalog.lengths
    shard_of = np.repeat(np.arange(len(lengths)), lengths)[samples]
    in_shard = samples - catalog.first_sample[shard_of]
    counts = catalog.items[samples]
    item_sample = np.repeat(np.arange(len(samples)), counts)
    sub = np.arange(len(item_sample)) - np.repeat(np.cumsum(counts) - counts, counts)
    return item_sample, shard_of, in_shard, sub


def items_per_rank(total: int, world_size: int, drop_last: bool) -> int:
    return total // world_size if drop_last else -(-total // world_size)


def rank_block(total: int, rank: int, world_size: int, drop_last: bool) -> tuple[np.ndarray, np.ndarray]:
    """(indices into a sequence of `total`, padded) of rank's contiguous block
    `[rank * n, (rank + 1) * n)`; past the end it wraps to the start (padding)."""
    n = items_per_rank(total, world_size, drop_last)
    raw = np.arange(rank * n, (rank + 1) * n, dtype=np.int64)
    if total == 0:
        return raw[:0], np.zeros(0, dtype=bool)
    return raw % total, raw >= total


def worker_slice(n: int, worker: int, num_workers: int) -> slice:
    """Contiguous, balanced: slice sizes differ by at most one (some are empty when n < workers)."""
    return slice(worker * n // num_workers, (worker + 1) * n // num_workers)


def partition(total: int, rank: int, worker: int, world_size: int, num_workers: int,
              drop_last: bool) -> tuple[np.ndarray, np.ndarray]:
    """(indices into a sequence of `total`, padded) that (rank, worker) yields, in order."""
    index, padded = rank_block(total, rank, world_size, drop_last)
    part = worker_slice(len(index), worker, num_workers)
    return index[part], padded[part]
