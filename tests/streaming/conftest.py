"""Fixtures of the reader's tests: a dataset for random access whose videos span several
shards and whose labels are imbalanced."""

from __future__ import annotations

import json
import os

import pytest

from vidshard.synth import synth_source

from ..helpers import write

MAP_VIEWS = ("front", "left")
# Per video: "walk" dominates, "fall" is rare, "sit" in between; gaps leave frames (and
# whole chunks of video 2) without a label. Chunks: [0, 20), [16, 36), [32, 52), [48, 60).
MAP_TIMELINES = [
    [{"start": 0, "end": 25, "label": "walk"}, {"start": 25, "end": 28, "label": "fall"},
     {"start": 28, "end": 60, "label": "walk"}],
    [{"start": 0, "end": 12, "label": "walk"}, {"start": 12, "end": 20, "label": "sit"},
     {"start": 20, "end": 44, "label": "walk"}, {"start": 44, "end": 47, "label": "sit"},
     {"start": 50, "end": 60, "label": "walk"}],
    [{"start": 2, "end": 9, "label": "walk"}, {"start": 9, "end": 10, "label": "fall"},
     {"start": 10, "end": 30, "label": "walk"}],
]


@pytest.fixture(scope="session")
def map_dataset(tmp_path_factory) -> str:
    """3 videos x 2 views x 60 frames (32x32, keypoints), 20-frame chunks overlapping by 4,
    in shards of ~1-2 samples: every video's chunks lie in several shards."""
    root = tmp_path_factory.mktemp("map")
    src, out = str(root / "src"), str(root / "ds")
    ids = synth_source(src, videos=3, frames=60, views=MAP_VIEWS, size=(32, 32), seed=7)
    for video_id, timeline in zip(ids, MAP_TIMELINES):
        with open(os.path.join(src, "annotations", f"{video_id}.json"), "w") as f:
            json.dump({"timeline": timeline}, f)
    write(src, out, max_video_frames=20, overlap=4, shard_bytes=30_000)
    return out
