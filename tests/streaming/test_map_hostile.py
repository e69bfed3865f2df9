"""The hostile-shard corpus of test_hostile.py through VideoShardMapDataset: `ds[i]` of the
broken sample ends in the same typed error naming shard, key and member as a streaming
epoch (the same reader, member checks and limits on the sample's byte range), in a forked
child killed after 10 s that may grow by at most 1 GiB; an item of another sample still
reads; a hostile index.json is refused when the dataset is made."""

from __future__ import annotations

import re

import pytest

from streaming import VideoShardMapDataset
from streaming.format import Limits

from .hostile_shards import GiB, edit_index, many_segments, samples_of_25_segments
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
    assert outcome.kind == "error" and outcome.error == "DatasetRefused" and re.search(reason, outcome.message), outcome
    assert outcome.seconds < 10 and outcome.grown < GiB


def test_index_counts_cannot_size_the_item_index_past_memory(copy):  # noqa: F811 (the fixture)
    """More items than Limits.max_epoch_items (each several int64s of the item index):
    refused on load (50,000 items under a lowered limit; the default bounds 10**8 the same way)."""
    edit_index(copy, samples_of_25_segments)
    outcome = isolated(construct, copy, {"sample": "segment", "num_frames": 1, "limits": Limits(max_epoch_items=49_999)})
    assert outcome.kind == "error" and outcome.error == "DatasetRefused", outcome
    assert re.search(r"lists \d+ items for an epoch, over the limit of 49999", outcome.message), outcome.message
    assert outcome.seconds < 10 and outcome.peak_rss < GiB


def test_overlapping_segments_are_refused_by_name(copy):  # noqa: F811 (the fixture)
    """Overlapping segments over one sample's 30 frames (index.json agrees on their number):
    refused at once, not a pass over every segment per item."""
    key = many_segments(copy)
    raised = isolated(broken_item, copy, key, {"sample": "segment", "num_frames": 2, **KPT})
    assert raised.kind == "typed" and raised.error == "ShardFormatError", raised
    assert "segments overlap or are out of order" in raised.message and raised.fields["key"] == key
    assert raised.fields["member"].endswith(".timeline.json") and raised.seconds < 10
