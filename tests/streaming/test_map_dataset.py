"""VideoShardMapDataset: item i from pixels, the same items as a streaming epoch, labels and
per-video order from index.json alone, and what an older or hostile index.json gets."""

from __future__ import annotations

import re

import json
import os
import shutil

import numpy as np
import pytest
import torch

from streaming import VideoShardDataset, VideoShardMapDataset
from streaming.errors import DecodeError, ShardFormatError, ShardReadError
from streaming.sampling import chunk_label
from vidshard.synth import read_barcode
from vidshard.tools.verify import verify

from .conftest import MAP_TIMELINES, MAP_VIEWS

MODES = {"chunk": {}, "segment": {"num_frames": 5}, "clip": {"num_frames": 4, "stride": 3}}


def spoil_clip(ds, i: int, view: str) -> tuple[str, str]:
    """Overwrite item i's clip of `view` in its shard with garbage of the same size: (shard, key)."""
    import tarfile

    shard, key, _ = ds.locate(i)
    with tarfile.open(shard) as tar:
        member = next(m for m in tar if m.name == f"{key}.{view}.mp4")
    with open(shard, "r+b") as f:
        f.seek(member.offset_data)
        f.write(b"\xff" * member.size)
    return shard, key


def check_pixels(item, views=MAP_VIEWS):
    video, frames = item["video"], item["frame_index"].tolist()
    assert video.shape[:2] == (len(views), len(frames))
    for v, view in enumerate(views):
        for t, f in enumerate(frames):
            assert read_barcode(video[v, t].numpy()) == (f, MAP_VIEWS.index(view)), (item["meta"]["key"], view, t)


def identity(item) -> tuple:
    meta = item["meta"]
    return (meta["key"], meta.get("segment_id"), tuple(item["frame_index"].tolist()))


def same_item(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for field in a:
        if isinstance(a[field], torch.Tensor):
            assert torch.equal(a[field], b[field]), field
        else:
            assert a[field] == b[field], field


@pytest.mark.parametrize("mode", MODES)
def test_random_items_deliver_the_frames_they_claim(map_dataset, mode):
    ds = VideoShardMapDataset(map_dataset, sample=mode, img_size=(24, 24) if mode == "segment" else None, **MODES[mode])
    ds.set_epoch(2)
    for i in np.random.default_rng([17, len(mode)]).choice(len(ds), size=6, replace=False).tolist():
        item = ds[i]
        check_pixels(item)
        meta = item["meta"]
        assert all(meta["start_frame"] <= f < meta["end_frame"] for f in item["frame_index"].tolist())
        assert (meta["key"], meta.get("segment_id")) == identity(ds[i])[:2]  # the same item every time
    assert identity(ds[-1]) == identity(ds[len(ds) - 1])
    with pytest.raises(IndexError, match="out of range"):
        ds[len(ds)]


# The options a user combines: resized, a subset of the views in another order, a subset of the videos.
SUBSETS = [
    ("chunk", {"img_size": (24, 24), "views": ("left",), "videos": ["session_000", "session_002"]}),
    ("segment", {"num_frames": 3, "img_size": (16, 20), "views": ("left", "front")}),
    ("clip", {"num_frames": 5, "stride": 2, "views": ("front",), "videos": ["session_001"]}),
]


@pytest.mark.parametrize("mode, options", [(m, {}) for m in MODES] + SUBSETS, ids=[*MODES, *(f"{m}-subset" for m, _ in SUBSETS)])
def test_one_pass_is_one_streaming_epoch(map_dataset, mode, options):
    """Field for field: keys, segments, frame indices, labels, pixels, keypoints; clip windows
    of the same epoch included; with img_size, views and videos subsets too."""
    kw = {**MODES[mode], "load_kpt": True, **options}
    ds = VideoShardMapDataset(map_dataset, sample=mode, **kw)
    stream = VideoShardDataset(map_dataset, sample=mode, shuffle=True, **kw)
    ds.set_epoch(1)
    stream.set_epoch(1)
    mapped = sorted((ds[i] for i in range(len(ds))), key=identity)
    streamed = sorted(stream, key=identity)
    assert len(mapped) == len(ds) == len(streamed) > 0
    assert {a["meta"]["video_id"] for a in mapped} == set(options.get("videos", ds.video_ids))
    views = options.get("views", MAP_VIEWS)
    for a, b in zip(mapped, streamed):
        check_pixels(a, views=views)
        assert a["video"].shape[-2:] == options.get("img_size", (32, 32)) and a["meta"]["views"] == list(views)
        assert identity(a) == identity(b)
        same_item({k: v for k, v in a.items() if k != "keypoints"}, {k: v for k, v in b.items() if k != "keypoints"})
        assert all(torch.equal(a["keypoints"][n], b["keypoints"][n]) for n in a["keypoints"])
    if mode == "clip":  # another epoch, other windows: the epoch reaches the map dataset
        ds.set_epoch(2)
        assert {identity(ds[i]) for i in range(len(ds))} != {identity(a) for a in mapped}


def test_item_order_is_shard_then_file_then_segment(map_dataset):
    index = json.load(open(os.path.join(map_dataset, "index.json")))
    expected = [(os.path.join(map_dataset, sh["url"]), s["key"], k) for sh in index["shardlist"] for s in sh["samples"]
                for k in range(s["nsegments"])]
    ds = VideoShardMapDataset(map_dataset, sample="segment", load_rgb=False, load_kpt=True)
    assert [ds.locate(i) for i in range(len(ds))] == expected
    assert [(ds[i]["meta"]["key"], ds[i]["meta"]["segment_id"]) for i in (0, len(ds) - 1)] == \
        [(expected[0][1], 0), (expected[-1][1], ds[len(ds) - 1]["meta"]["segment_id"])]


@pytest.mark.parametrize("mode", MODES)
def test_label_ids_agree_with_items_and_need_no_shard(map_dataset, tmp_path, mode):
    ds = VideoShardMapDataset(map_dataset, sample=mode, load_rgb=False, load_kpt=True, **MODES[mode])
    got = [ds[i]["label_id"] for i in range(len(ds))]
    assert ds.label_ids.dtype == np.int64 and ds.label_ids.tolist() == got
    labels = json.load(open(os.path.join(map_dataset, "index.json")))["labels"]
    assert [labels[g] if g >= 0 else None for g in got] == [ds[i]["label"] for i in range(len(ds))]
    if mode != "segment":
        assert -1 in got  # video 2's last chunks lie in a gap of its timeline
    # index.json alone, its shards gone: the labels are there, an item is a typed read error
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(os.path.join(map_dataset, "index.json"), bare / "index.json")
    alone = VideoShardMapDataset(str(bare), sample=mode, load_rgb=False, load_kpt=True, **MODES[mode])
    assert alone.label_ids.tolist() == got
    with pytest.raises(ShardReadError) as info:
        alone[0]
    assert info.value.shard.endswith(".tar") and info.value.key == alone.locate(0)[1]


def test_chunk_label_is_the_label_covering_most_frames():
    assert chunk_label([(2, 5), (0, 3), (2, 2), (1, 6)]) == 2  # frames summed over a label's segments: 7 > 6
    assert chunk_label([(2, 5), (0, 3), (2, 1), (1, 6)]) == 1  # 6 frames each: the lower id
    assert chunk_label([(3, 4), (1, 4)]) == 1
    assert chunk_label([(-1, 9), (4, 1)]) == 4
    assert chunk_label([]) == -1


def test_indices_of_walks_a_video_across_shards_in_frame_order(map_dataset):
    for mode in ("chunk", "segment"):
        ds = VideoShardMapDataset(map_dataset, sample=mode, num_frames=3, views=("left",))
        assert ds.video_ids == ["session_000", "session_001", "session_002"]
        covered = []
        for video in ds.video_ids:
            items = [ds[int(i)] for i in ds.indices_of(video)]
            shards = {item["meta"]["shard"] for item in items}
            assert len(shards) >= 2  # the fixture spreads every video over several shards
            order = [(it["meta"]["start_frame"], it["meta"].get("segment_id", 0)) for it in items]
            assert order == sorted(order) and len(set(order)) == len(order)
            assert {it["meta"]["video_id"] for it in items} == {video}
            for it in items:
                check_pixels(it, views=("left",))
            covered += ds.indices_of(video).tolist()
        assert sorted(covered) == list(range(len(ds)))
    timeline = MAP_TIMELINES[1]
    ds = VideoShardMapDataset(map_dataset, sample="segment", num_frames=2, views=("left",), videos=["session_001"])
    labels = [ds[int(i)]["label"] for i in ds.indices_of("session_001")]
    starts = [0, 16, 32, 48]  # every chunk's segments, chunk by chunk: the timeline walked in order
    assert labels == [s["label"] for c in starts for s in timeline if s["start"] < c + 20 and s["end"] > c]
    with pytest.raises(KeyError, match="session_000"):
        ds.indices_of("session_000")  # not among videos=


def test_index_without_segment_labels_is_refused(map_dataset, tmp_path):
    """`segments` is a required field of format_version 1: a sample without it is refused on
    load, naming the field (no reader path for an index.json that lacks it)."""
    old = str(tmp_path / "old")
    shutil.copytree(map_dataset, old)
    path = os.path.join(old, "index.json")
    index = json.load(open(path))
    del index["shardlist"][0]["samples"][0]["segments"]
    json.dump(index, open(path, "w"))
    with pytest.raises(ValueError, match="SampleEntry: missing field 'segments'"):
        VideoShardMapDataset(old, sample="segment", num_frames=2)


@pytest.mark.parametrize("version", [0, 2, "1", None])
def test_an_unknown_format_version_is_refused_naming_the_one_read(map_dataset, tmp_path, version):
    other = str(tmp_path / "other")
    shutil.copytree(map_dataset, other)
    path = os.path.join(other, "index.json")
    index = json.load(open(path))
    index["format_version"] = version
    json.dump(index, open(path, "w"))
    for cls in (VideoShardMapDataset, VideoShardDataset):
        with pytest.raises(ValueError, match=f"format_version {version!r}: this reader reads format_version 1 only"):
            cls(other)


def edit_index(src: str, dst: str, edit) -> str:
    shutil.copytree(src, dst)
    path = os.path.join(dst, "index.json")
    index = json.load(open(path))
    edit(index["shardlist"][0]["samples"][0])
    json.dump(index, open(path, "w"))
    return dst


@pytest.mark.parametrize("edit, why", [
    (lambda s: s["segments"].pop(), "pairs"),
    (lambda s: s["segments"][0].__setitem__(0, "dance"), "labels of the vocabulary"),
    (lambda s: s["segments"][0].__setitem__(1, 0), "frames >= 1"),
    (lambda s: s["segments"][0].__setitem__(1, True), "frames >= 1"),
    (lambda s: s["segments"][0].__setitem__(1, 10**9), "frames in all at most"),
    (lambda s: s.__setitem__("segments", {"walk": 3}), "pairs"),
    (lambda s: s["segments"].__setitem__(0, ["walk"]), "pairs"),
])
def test_hostile_segments_in_index_json_are_refused_by_name(map_dataset, tmp_path, edit, why):
    bad = edit_index(map_dataset, str(tmp_path / "bad"), edit)
    with pytest.raises(ValueError, match=rf"shardlist\[0\]\.samples\[0\]\.segments .*{why}"):
        VideoShardMapDataset(bad)


def test_timeline_disagreeing_with_index_json_is_a_format_error(map_dataset, tmp_path):
    def swap(sample):  # still valid labels, but not the ones timeline.json holds
        sample["segments"] = [["fall" if label != "fall" else "walk", frames] for label, frames in sample["segments"]]

    bad = edit_index(map_dataset, str(tmp_path / "bad"), swap)
    for ds in (VideoShardMapDataset(bad, load_rgb=False, load_kpt=True),
               VideoShardDataset(bad, load_rgb=False, load_kpt=True, shuffle=False)):
        with pytest.raises(ShardFormatError, match="differ from index.json") as info:
            ds[0] if isinstance(ds, VideoShardMapDataset) else list(ds)
        assert info.value.member.endswith(".timeline.json") and info.value.key
    problems, _ = verify(bad)
    assert len(problems) == 1 and re.search(r"timeline.json's segments \(label, frames\) .* differ from index.json's .*"
                                            r"member=.*\.timeline\.json", problems[0]), problems  # the reader's own error


def test_a_bad_sample_raises_naming_it_and_spares_the_others(map_dataset, tmp_path):
    broken = str(tmp_path / "broken")
    shutil.copytree(map_dataset, broken)
    ds = VideoShardMapDataset(broken)
    shard, key = spoil_clip(ds, 1, "left")
    with pytest.raises(DecodeError) as info:
        ds[1]
    assert (info.value.key, info.value.view, info.value.shard) == (key, "left", shard)
    check_pixels(ds[0])
    check_pixels(ds[len(ds) - 1])


def test_options_of_the_wrong_class_or_by_position_are_a_type_error_naming_the_class(small_dataset):
    import pytest

    from streaming import MapOptions, StreamOptions, VideoShardDataset, VideoShardMapDataset

    with pytest.raises(TypeError, match="must be a StreamOptions .*got MapOptions"):
        VideoShardDataset(small_dataset, MapOptions())
    with pytest.raises(TypeError, match="must be a StreamOptions .*got str 'segment'"):
        VideoShardDataset(small_dataset, "segment")
    with pytest.raises(TypeError, match="must be a MapOptions .*got StreamOptions"):
        VideoShardMapDataset(small_dataset, StreamOptions())
    with pytest.raises(TypeError, match="must be a MapOptions .*got str 'segment'"):
        VideoShardMapDataset(small_dataset, "segment")
    assert VideoShardMapDataset(small_dataset, MapOptions(load_rgb=False, load_kpt=True), open_shards=2).open_shards == 2


def test_a_missing_or_long_format_version_is_said_plainly(map_dataset, tmp_path):
    def with_version(name, edit):
        other = str(tmp_path / name)
        shutil.copytree(map_dataset, other)
        path = os.path.join(other, "index.json")
        index = json.load(open(path))
        edit(index)
        json.dump(index, open(path, "w"))
        return other

    missing = with_version("none", lambda index: index.pop("format_version"))
    with pytest.raises(ValueError, match="index.json has no format_version: this reader reads format_version 1 only"):
        VideoShardDataset(missing)
    long = with_version("long", lambda index: index.__setitem__("format_version", "9" * 100))
    with pytest.raises(ValueError, match=r"has format_version '9{39}\.\.\. \(102 characters\): this reader"):
        VideoShardDataset(long)
