"""The longest names allowed (a 64-character video id, long view names) give member names
past tar's 100-byte ustar field: tar writes PAX headers for them. Every sample's offset and
size in index.json must still frame exactly its members, the reader must stream them, and
`vidshard verify` must catch an index.json whose offsets do not."""

from __future__ import annotations

import io
import json
import os
import tarfile

import pytest

from streaming import VideoShardDataset
from vidshard.cli import main
from vidshard.synth import read_barcode, synth_source

from ..helpers import write

VIDEO_ID = "v" * 55 + "_long_id0"  # 64 characters: the documented maximum
VIEWS = ("front_camera_view_number_x", "side_" + "w" * 59)  # the second one 64 characters long


@pytest.fixture(scope="module")
def long_source(tmp_path_factory) -> str:
    root = str(tmp_path_factory.mktemp("long") / "src")
    synth_source(root, videos=2, frames=40, views=VIEWS, size=(64, 48), seed=4)
    os.rename(os.path.join(root, "videos", "session_001"), os.path.join(root, "videos", VIDEO_ID))
    os.rename(os.path.join(root, "annotations", "session_001.json"), os.path.join(root, "annotations", f"{VIDEO_ID}.json"))
    os.rename(os.path.join(root, "keypoints", "session_001"), os.path.join(root, "keypoints", VIDEO_ID))
    return root


def test_long_names_frame_exactly(long_source, tmp_path, capsys):
    assert len(VIDEO_ID) == 64 and len(VIEWS[1]) == 64
    out = str(tmp_path / "out")
    write(long_source, out, max_video_frames=16, overlap=2, shard_bytes=60_000)
    index = json.load(open(os.path.join(out, "index.json")))
    longest = 0
    for shard in index["shardlist"]:
        raw = open(os.path.join(out, shard["url"]), "rb").read()
        for entry in shard["samples"]:  # a byte-range read of the sample is exactly its members
            piece = raw[entry["offset"] : entry["offset"] + entry["size"]]
            with tarfile.open(fileobj=io.BytesIO(piece), mode="r:") as tar:
                names = [m.name for m in tar.getmembers()]
            assert names and all(n.startswith(entry["key"] + ".") for n in names), names
            assert len(names) == 2 + 2 * len(VIEWS)
            longest = max(longest, *map(len, names))
    assert longest > 100  # PAX headers were needed
    seen = 0
    for item in VideoShardDataset(out, load_rgb=True, load_kpt=True):
        frames = item["frame_index"].tolist()
        for v in range(len(VIEWS)):
            assert [read_barcode(item["video"][v, t].numpy()) for t in range(len(frames))] == [(f, v) for f in frames]
        seen += 1
    assert seen == index["totals"]["chunks"]
    assert main(["verify", out]) == 0 and "all checks hold" in capsys.readouterr().out


def test_verify_catches_offsets_that_do_not_frame_their_sample(long_source, tmp_path, capsys):
    out = str(tmp_path / "out")
    write(long_source, out, max_video_frames=16, overlap=2, shard_bytes=60_000)
    path = os.path.join(out, "index.json")
    index = json.load(open(path))
    # What a writer that sums member sizes without their PAX headers would have written.
    for shard in index["shardlist"]:
        offset = 0
        for entry in shard["samples"]:
            entry["offset"] = offset
            entry["size"] -= 1024 if entry["key"].startswith(VIDEO_ID) else 0
            offset += entry["size"]
    json.dump(index, open(path, "w"))
    assert main(["verify", out]) == 1
    report = capsys.readouterr().out
    assert f"{VIDEO_ID}_00000: index.json frames bytes" in report and "its members are at" in report
