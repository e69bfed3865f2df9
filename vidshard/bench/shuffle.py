"""Shuffle quality and resume planning, from the pure epoch plan (no files); and items/s of
each shuffle scheme from local disk and from a local S3 server.

Quality: batches are formed per worker as a DataLoader does (each worker's items in yield
order, `batch` at a time). The pair-repeat rate is the fraction of item pairs sharing a batch
in epoch 0 that share a batch again in epoch 1; a global shuffle repeats a pair with
probability sum_b s_b (s_b - 1) / (N (N - 1)) over the batch sizes s_b. Distinct shards per
batch count the shards a batch's items come from.
"""

from __future__ import annotations

import numpy as np

from streaming.plan import Catalog, EpochPlan, PlanSpec, epoch_plan


def worker_batches(plan: EpochPlan, batch: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(item ids, shards) of every batch of every (rank, worker); item id = file-order index."""
    catalog, order = plan.catalog, plan.order
    base = np.cumsum(catalog.items) - catalog.items
    out = []
    for rank in range(plan.spec.world_size):
        for worker in range(plan.spec.num_workers):
            windows = plan.windows(rank, worker)
            if not windows:
                continue
            pos = np.concatenate([w.positions for w in windows])
            ids = base[catalog.first_sample[order.shard[pos]] + order.sample[pos]] + order.sub[pos]
            out += [(ids[i : i + batch], order.shard[pos[i : i + batch]]) for i in range(0, len(ids), batch)]
    return out


def _pairs(batches: list[tuple[np.ndarray, np.ndarray]], n: int) -> np.ndarray:
    codes = []
    for ids, _ in batches:
        a, b = np.meshgrid(ids, ids, indexing="ij")
        keep = a < b
        codes.append(a[keep] * n + b[keep])
    return np.unique(np.concatenate(codes)) if codes else np.zeros(0, np.int64)


def batch_quality(first: list, second: list, total: int) -> dict:
    """Pair repeats from `first` (epoch 0's batches) to `second` (epoch 1's)."""
    p0, p1 = _pairs(first, total), _pairs(second, total)
    sizes = np.array([len(ids) for ids, _ in second], dtype=np.float64)
    glob = float((sizes * (sizes - 1)).sum() / (total * (total - 1)))
    repeat = len(np.intersect1d(p0, p1, assume_unique=True)) / max(1, len(p0))
    return {"pair_repeat": repeat, "global_pair_repeat": glob, "repeat_vs_global": repeat / glob,
            "shards_per_batch": float(np.mean([len(np.unique(s)) for _, s in first]))}


def shuffle_quality(catalog: Catalog, *, world_size: int, num_workers: int, buffer_bytes: int,
                    block_bytes: int | None, batch: int, seed: int = 0) -> dict:
    def batches(epoch: int) -> list:
        spec = PlanSpec(epoch=epoch, seed=seed, shuffle=True, drop_last=False, buffer_bytes=buffer_bytes,
                        world_size=world_size, num_workers=num_workers, block_bytes=block_bytes)
        return worker_batches(epoch_plan(catalog, spec), batch)

    return batch_quality(batches(0), batches(1), catalog.total_items)
