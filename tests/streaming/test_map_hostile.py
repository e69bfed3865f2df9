"""The hostile-shard corpus of test_hostile.py through VideoShardMapDataset: `ds[i]` of the
broken sample ends in the same typed error naming shard, key and member as a streaming
epoch (the same reader, member checks and limits on the sample's byte range), in a forked
child killed after 10 s that may grow by at most 1 GiB; an item of another sample still
reads; a hostile index.json is refused when the dataset is made."""

from __future__ import annotations

import re

import pytest

from streaming import VideoShardMapDataset

from .hostile_shards import GiB, edit_index, many_segments
from .sandbox import isolated
from .test_hostile import INDEX_CASES, KPT, SAMPLE_CASES
from .test_hostile import copy  # noqa: F401 (the fixture: a private copy of the small dataset)


def broken_item(path: str, key: str, kwargs: dict) -> str:
    """An item of another sample (the last one), then the broken sample's first item."""
    ds = VideoShardMapDataset(path, **kwargs)
    keys = [ds.locate(i)[1] for i in range(len(ds))]
    assert keys[-1] != key
    ds[len(ds) - 1]
    ds[keys.index(key)]
    return "the broken item was delivered"


@pytest.mark.parametrize("case", SAMPLE_CASES, ids=[c[0] for c in SAMPLE_CASES])
def test_hostile_sample_is_a_typed_error_naming_it(copy, case):  # noqa: F811 (the fixture)
    _, breaks, kwargs, error, reason, member, _ = case
    key = breaks(copy)
    raised = isolated(broken_item, copy, key, kwargs)
    assert raised.kind == "typed", raised
    assert raised.error == error and re.search(reason, raised.message), raised.message
    assert raised.fields["shard"].endswith("shard-000000.tar") and raised.fields["key"] == key, raised.fields
    if member:
        assert re.search(member, raised.fields["member"] or ""), raised.fields
    assert raised.seconds < 10 and raised.grown < GiB


def construct(path: str, kwargs: dict) -> int:
    return len(VideoShardMapDataset(path, **kwargs))


@pytest.mark.parametrize("case", INDEX_CASES, ids=[c[0] for c in INDEX_CASES])
def test_hostile_index_is_refused_on_load(copy, tmp_path, case):  # noqa: F811 (the fixture)
    _, change, reason = case
    edit_index(copy, change)
    outcome = isolated(construct, copy, {"cache_dir": str(tmp_path / "cache"), "sample": "segment", "num_frames": 1})
    assert outcome.kind == "error" and outcome.error == "ValueError" and re.search(reason, outcome.message), outcome
    assert outcome.seconds < 10 and outcome.grown < GiB


def test_index_counts_cannot_size_the_item_index_past_memory(copy):  # noqa: F811 (the fixture)
    """2,000 samples of 100,000 segments each: 2 * 10**8 items, whose item index is several
    1.6 GB arrays, from 180 KB of index.json. Refused on load (Limits.max_epoch_items)."""
    def many_segments(index):
        entry = index["shardlist"][0]
        entry["samples"] = [dict(key=f"v_{i:05d}", offset=i * 1024, size=1024, nframes=1, nsegments=100_000) for i in range(2000)]
        entry.update(nsamples=2000, nframes=2000, nsegments=2000 * 100_000, filesize=2000 * 1024)

    edit_index(copy, many_segments)
    outcome = isolated(construct, copy, {"sample": "segment", "num_frames": 1})
    assert outcome.kind == "error" and outcome.error == "ValueError", outcome
    assert re.search(r"lists \d+ items for an epoch, over the limit of 100000000", outcome.message), outcome.message
    assert outcome.seconds < 10 and outcome.peak_rss < GiB


def test_overlapping_segments_are_refused_by_name(copy):  # noqa: F811 (the fixture)
    """5,000 overlapping segments over one sample's 30 frames (an index.json without segment
    labels agrees): refused at once, not 5,000 passes over 5,000 segments."""
    key = many_segments(copy)
    raised = isolated(broken_item, copy, key, {"sample": "segment", "num_frames": 2, **KPT})
    assert raised.kind == "typed" and raised.error == "ShardFormatError", raised
    assert "segments overlap or are out of order" in raised.message and raised.fields["key"] == key
    assert raised.fields["member"].endswith(".timeline.json") and raised.seconds < 10
