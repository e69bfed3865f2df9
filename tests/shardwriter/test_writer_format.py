"""Shards are plain tars with a truthful manifest: GNU tar, ffprobe and webdataset read them."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import tarfile

import numpy as np
import webdataset as wds

from vidshard.synth import KPT_KIND, keypoint_missing
from streaming.format import Manifest, timeline_from_json

from ..helpers import VIEWS, read_dataset


def test_gnu_tar_lists_and_extracts(small_dataset, tmp_path):
    index, _ = read_dataset(small_dataset)
    shard = os.path.join(small_dataset, index["shardlist"][0]["url"])
    listing = subprocess.run(["tar", "tvf", shard], check=True, capture_output=True, text=True).stdout.splitlines()
    assert all(line.startswith("-r--r--r-- vidshard/vidshard") for line in listing)
    subprocess.run(["tar", "xf", shard, "-C", str(tmp_path)], check=True)
    names = sorted(os.listdir(tmp_path))
    keys = [s["key"] for s in index["shardlist"][0]["samples"]]
    expected = sorted(f"{k}.{suffix}" for k in keys for suffix in
                      ["meta.json", "timeline.json"] + [f"{v}.mp4" for v in VIEWS] + [f"{v}.kpt.npz" for v in VIEWS])
    assert names == expected
    meta = json.loads((tmp_path / f"{keys[0]}.meta.json").read_text())
    count = subprocess.run(
        ["ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0", "-show_entries",
         "stream=nb_read_frames", "-of", "csv=p=0", str(tmp_path / f"{keys[0]}.left.mp4")],
        check=True, capture_output=True, text=True,
    ).stdout.strip()
    assert int(count) == meta["end_frame"] - meta["start_frame"]


def test_plain_webdataset_reads_every_member(small_dataset):
    index, samples = read_dataset(small_dataset)
    urls = [os.path.join(small_dataset, s["url"]) for s in index["shardlist"]]
    seen = {}
    for sample in wds.WebDataset(urls, shardshuffle=False, empty_check=False):
        seen[sample["__key__"]] = {k: v for k, v in sample.items() if not k.startswith("__")}
    assert seen == samples


def test_manifest_describes_the_shards(small_dataset, small_source):
    with open(os.path.join(small_dataset, "index.json")) as f:
        raw = json.load(f)
    manifest = Manifest.from_json(raw)  # the typed reader accepts what the writer wrote
    assert raw["__kind__"] == "wids-shard-index-v1" and raw["wids_version"] == 1
    assert manifest.views == list(VIEWS) and manifest.max_video_frames == 30 and manifest.overlap == 6
    labels, segments = set(), 0
    for vid in sorted(os.listdir(os.path.join(small_source, "annotations"))):
        with open(os.path.join(small_source, "annotations", vid)) as f:
            timeline = json.load(f)["timeline"]
        labels |= {s["label"] for s in timeline}
        segments += len(timeline)
    assert manifest.labels == sorted(labels)
    assert manifest.totals["videos"] == 3 and manifest.totals["frames"] == 225 and manifest.totals["segments"] == segments
    assert len(manifest.shards) >= 2  # the tiny shard size forces rollover
    keys = []
    for shard in manifest.shards:
        path = os.path.join(small_dataset, shard.url)
        data = open(path, "rb").read()
        assert len(data) == shard.filesize and hashlib.sha256(data).hexdigest() == shard.sha256
        with tarfile.open(path) as tar:
            firsts = {}
            for m in tar.getmembers():
                firsts.setdefault(m.name.partition(".")[0], m.offset)
        assert [(s.key, s.offset) for s in shard.samples] == list(firsts.items())
        assert shard.nsamples == len(shard.samples)
        keys += [s.key for s in shard.samples]
    assert sorted(keys) == [f"session_{v:03d}_{c:05d}" for v in range(3) for c in range(3)]
    assert keys != sorted(keys)  # videos interleaved across shards
    assert manifest.totals["chunks"] == 9 and manifest.totals["shards"] == len(manifest.shards)


def test_sample_members_line_up(small_dataset, small_source):
    index, samples = read_dataset(small_dataset)
    entries = {s["key"]: s for shard in index["shardlist"] for s in shard["samples"]}
    for key, members in samples.items():
        meta = json.loads(members["meta.json"])
        start, end = meta["start_frame"], meta["end_frame"]
        assert meta["key"] == key and key == f"{meta['video_id']}_{meta['chunk_index']:05d}"
        assert meta["views"] == list(VIEWS) and meta["annotation"]["synthetic"] is True
        assert entries[key]["nframes"] == end - start
        with open(os.path.join(small_source, "annotations", f"{meta['video_id']}.json")) as f:
            source_timeline = json.load(f)["timeline"]
        segments = timeline_from_json(json.loads(members["timeline.json"]))
        assert entries[key]["nsegments"] == len(segments)
        for seg, (label, frames) in zip(segments, entries[key]["segments"], strict=True):
            src = source_timeline[seg.segment_id]
            assert seg.label == src["label"] and seg.global_start == max(src["start"], start)
            # index.json's labels: the source's, with the frames the segment covers in this chunk
            assert label == src["label"] and frames == min(src["end"], end) - max(src["start"], start)
        for v, view in enumerate(VIEWS):
            with np.load(io.BytesIO(members[f"{view}.kpt.npz"]), allow_pickle=False) as npz:
                mask, frame = npz["mask"], npz[f"{KPT_KIND}.frame"]
                assert npz[f"{KPT_KIND}.joints_2d"].shape == (end - start, 17, 2)
            for t, f in enumerate(range(start, end)):
                assert mask[t] == (not keypoint_missing(f, v))
                assert frame[t] == (f if mask[t] else 0)
