"""Epoch planning: which items each (rank, worker) yields, and in which order. Pure numpy.

A plan is a function of the manifest's counts and sizes and of a `PlanSpec` only:

1. the epoch's item sequence: blocks of neighbouring samples, drawn from every shard,
   permuted (`order.py`);
2. rank r takes the contiguous block `[r*n, (r+1)*n)` of the sequence, n = total // R with
   drop_last (at most R-1 items dropped), else ceil(total / R) with positions past the end
   wrapping to the start (padding, flagged): every rank yields exactly n items;
3. worker w of W takes a contiguous slice of its rank's block (sizes differ by at most 1);
4. the slice is cut into byte-bounded windows, each permuted (`windows.py`).

A resumed epoch (`PlanSpec.base`: the interrupted plan's spec plus how many items each of
its (rank, worker) partitions had yielded) is a plan too: its sequence is the items the
interrupted partitions had not yet yielded, partition by partition in their yield order,
and steps 2-4 split it over the new world. Resumes chain (a resumed plan interrupted and
resumed again); each level's sequence is computed once from the level below (of each old
partition, only the window it stopped in is permuted again), so a chain of d resumes costs
about d times one plan of the whole epoch, whatever the world shapes.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from .order import Catalog, EpochOrder, epoch_order, items_per_rank, partition, rank_block, worker_slice
from .windows import Window, cut, shuffled, window_around, window_starts

__all__ = ["Catalog", "EpochOrder", "EpochPlan", "PlanSpec", "Progress", "Window", "epoch_plan", "plan_items",
           "skip_items"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class PlanSpec:
    """Everything that decides an epoch's plan besides the catalog."""

    epoch: int
    seed: int
    shuffle: bool
    drop_last: bool
    buffer_bytes: int  # a window's encoded bytes, at most (or one larger sample)
    world_size: int
    num_workers: int
    block_bytes: int | None = None  # shuffle blocks; None: whole shards (shuffle_block="shard")
    fingerprint: dict[str, Any] | None = None  # what the catalog was built from; the planner ignores it
    base: Progress | None = None  # the interrupted plan this one continues, if any

    def to_json(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "base": self.base.to_json() if self.base else None}

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> PlanSpec:
        return cls(**{**obj, "base": Progress.from_json(obj["base"]) if obj.get("base") else None})

    @property
    def depth(self) -> int:
        """How many resumes this plan is away from a fresh epoch."""
        return 0 if self.base is None else self.base.spec.depth + 1


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


@dataclasses.dataclass(frozen=True, kw_only=True)
class EpochPlan:
    """One level of an epoch's plan: its sequence of epoch positions, split by `spec`."""

    catalog: Catalog
    spec: PlanSpec
    order: EpochOrder
    sequence: np.ndarray  # epoch positions, in this plan's order (no padding)

    @property
    def items_per_rank(self) -> int:
        return items_per_rank(len(self.sequence), self.spec.world_size, self.spec.drop_last)

    def partition(self, rank: int, worker: int) -> tuple[np.ndarray, np.ndarray]:
        """(epoch positions, padded) that (rank, worker) yields, before windows."""
        s = self.spec
        index, padded = partition(len(self.sequence), rank, worker, s.world_size, s.num_workers, s.drop_last)
        return self.sequence[index], padded

    def windows(self, rank: int, worker: int) -> list[Window]:
        """The windows (rank, worker) yields, in yield order."""
        positions, padded = self.partition(rank, worker)
        starts = window_starts(positions, self.order, self.catalog, self.spec.buffer_bytes)
        return [self._window(p, d) for p, d in cut(positions, padded, starts)]

    def _window(self, positions: np.ndarray, padded: np.ndarray) -> Window:
        if not self.spec.shuffle:
            return Window(positions=positions, padded=padded)
        perm = shuffled(positions, padded, seed=self.spec.seed, epoch=self.spec.epoch, depth=self.spec.depth)
        return Window(positions=positions[perm], padded=padded[perm])

    def remaining(self, yielded: dict[tuple[int, int], int]) -> np.ndarray:
        """The epoch positions no partition had yielded after `yielded` items each, partition
        by partition in yield order. Padding is dropped: the next level pads anew."""
        s = self.spec
        rest = []
        for rank in range(s.world_size):
            block, block_padded = rank_block(len(self.sequence), rank, s.world_size, s.drop_last)
            for worker in range(s.num_workers):
                part = worker_slice(len(block), worker, s.num_workers)
                positions, padded = self.sequence[block[part]], block_padded[part]
                count = yielded.get((rank, worker), 0)
                if count >= len(positions):
                    continue
                if count:  # the window `count` falls in was yielded in its permuted order
                    start, end = window_around(positions, count, self.order, self.catalog, s.buffer_bytes)
                    window = self._window(positions[start:end], padded[start:end])
                    rest.append(window.positions[count - start :][~window.padded[count - start :]])
                    positions, padded = positions[end:], padded[end:]
                rest.append(positions[~padded])
        return np.concatenate(rest) if rest else np.zeros(0, np.int64)


def epoch_plan(catalog: Catalog, spec: PlanSpec) -> EpochPlan:
    """The plan `spec` describes, its resumed levels resolved from the oldest up, once each."""
    chain = [spec]
    while chain[-1].base is not None:
        chain.append(chain[-1].base.spec)
    root = chain[-1]
    order = epoch_order(catalog, epoch=root.epoch, seed=root.seed, shuffle=root.shuffle, block_bytes=root.block_bytes)
    plan = EpochPlan(catalog=catalog, spec=root, order=order, sequence=np.arange(len(order), dtype=np.int64))
    for level in reversed(chain[:-1]):
        plan = EpochPlan(catalog=catalog, spec=level, order=order, sequence=plan.remaining(level.base.yielded))
    return plan


def plan_items(catalog: Catalog, spec: PlanSpec) -> int:
    """Items every rank yields under `spec`."""
    if spec.base is None:
        return items_per_rank(catalog.total_items, spec.world_size, spec.drop_last)
    return epoch_plan(catalog, spec).items_per_rank


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
