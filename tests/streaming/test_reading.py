"""The read path's byte-range stage: a window's samples cut into runs (a pure planner)."""

from __future__ import annotations

import os

from streaming.reading import runs
from streaming.shards import load_manifest


def test_runs_join_adjacent_ranges_of_one_shard_only(small_dataset):
    manifest = load_manifest(os.path.join(small_dataset, "index.json"))
    shard = next(i for i, s in enumerate(manifest.shards) if len(s.samples) >= 3)
    samples = manifest.shards[shard].samples
    other = next(i for i in range(len(manifest.shards)) if i != shard)
    pairs = [(shard, 0), (shard, 1), (other, 0), (shard, 2), (shard, 0)]
    got = [(r.shard, r.samples, r.start, r.end) for r in runs(manifest, pairs)]
    first = manifest.shards[other].samples[0]
    assert got == [(shard, [0, 1], samples[0].offset, samples[1].offset + samples[1].size),
                   (other, [0], first.offset, first.offset + first.size),
                   (shard, [2], samples[2].offset, samples[2].offset + samples[2].size),  # not after sample 1 in the list
                   (shard, [0], samples[0].offset, samples[0].offset + samples[0].size)]  # backwards: a run of its own
    assert list(runs(manifest, [])) == []
