"""Real camera recordings: every clip frame is the source frame as a player shows it.

Sources are real footage (tests/recordings.py) given each quirk with the FFmpeg CLI, and
every clip frame, decoded by the FFmpeg CLI, is proven against the CLI's decode of the
source as displayed (PSNR floor, and closer than the neighbouring source frames).
"""

from __future__ import annotations

import json
import logging
import os
import struct
import subprocess

import av
import numpy as np
import pytest

from shardwriter.encode import EncodeSettings
from shardwriter.source import probe_view

from ..helpers import read_dataset, write
from ..recordings import FRAMES_PER_VIEW, QUIRKS, camera_view, display_frames, ffmpeg, prove_frames, quirk_view, recording_source

VIEWS3 = ("front", "left", "right")


def ffprobe_stream(path: str) -> dict:
    out = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_streams", "-of", "json", path],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out)["streams"][0]


def source_path(src: str, vid: str, view: str) -> str:
    folder = os.path.join(src, "videos", vid)
    return os.path.join(folder, next(n for n in sorted(os.listdir(folder)) if n.partition(".")[0] == view))


def prove_clips(src: str, out: str, tmp_path) -> dict:
    """Every clip of OUTPUT, CLI-decoded, against the CLI's decode of its source view."""
    _, samples = read_dataset(out)
    refs, metas = {}, {}
    for key, parts in sorted(samples.items()):
        meta = metas[key] = json.loads(parts["meta.json"])
        for view in meta["views"]:
            ref = refs.setdefault((meta["video_id"], view), display_frames(source_path(src, meta["video_id"], view)))
            clip = str(tmp_path / f"{key}.{view}.mp4")
            with open(clip, "wb") as f:
                f.write(parts[f"{view}.mp4"])
            size = meta["view_sizes"][view]
            got = display_frames(clip, (size["width"], size["height"]))
            assert len(got) == meta["num_frames"]
            prove_frames(got, ref, meta["start_frame"], f"{key} {view}")
    assert {vid for vid, _ in refs} == {m["video_id"] for m in metas.values()}
    return metas


# run_frames 1: every chunk its own encode task, so every quirk is entered mid-file at a keyframe.
@pytest.mark.parametrize("run_frames", [None, 1])
@pytest.mark.parametrize("quirk", QUIRKS)
def test_every_clip_frame_is_the_source_frame_as_displayed(quirk, run_frames, tmp_path, caplog):
    src = recording_source(str(tmp_path / "src"), {"rec": {v: quirk for v in VIEWS3}}, FRAMES_PER_VIEW)
    out = str(tmp_path / "out")
    with caplog.at_level(logging.WARNING, logger="vidshard.write"):
        report = write(src, out, max_video_frames=16, overlap=2, run_frames=run_frames)  # no flags for the quirk
    # entered at a keyframe, never decoded from the start (the midgop .ts: its decoder restarts a GOP late)
    fallbacks = [r.getMessage() for r in caplog.records if "decoded from its start" in r.getMessage()]
    assert not fallbacks or (quirk == "midgop" and all("before frame 14 " in m for m in fallbacks)), fallbacks
    assert report.videos == 1 and not report.skipped
    metas = prove_clips(src, out, tmp_path)
    meta = metas["rec_00000"]
    assert meta["video_frames"] == FRAMES_PER_VIEW
    for view in VIEWS3:  # the cheap count (demuxing, discards left out) is the decoders' count
        path = source_path(src, "rec", view)
        with av.open(path) as c:
            decoded = sum(1 for _ in c.decode(video=0))
        probe = probe_view("rec", path)
        assert probe.num_frames == decoded == len(display_frames(path)) == FRAMES_PER_VIEW
        assert len(probe.entries.points) >= 2  # keyframes mid-file: short runs enter every quirk there
    for view in VIEWS3:
        assert meta["view_sizes"][view] == {"width": 88, "height": 72}  # display size, every quirk
        source = meta["view_source"][view]
        assert source["rotation"] == (90 if quirk == "rotate90" else 0)
        assert (source["width"], source["height"]) == ((72, 88) if quirk == "rotate90" else (88, 72))


def test_rotation_applied_and_recorded(tmp_path):
    src = recording_source(str(tmp_path / "src"), {"rec": {"front": "rotate90", "left": "plain"}}, 20)
    out = str(tmp_path / "out")
    write(src, out, max_video_frames=20)
    _, samples = read_dataset(out)
    clip = str(tmp_path / "clip.mp4")
    with open(clip, "wb") as f:
        f.write(samples["rec_00000"]["front.mp4"])
    stream = ffprobe_stream(clip)
    # Stored upright: no display matrix left for a player to apply a second time.
    assert (stream["width"], stream["height"]) == (88, 72) and not stream.get("side_data_list")
    meta = json.loads(samples["rec_00000"]["meta.json"])
    assert meta["autorotate"] is True
    assert meta["view_source"]["front"] | {"colour": None} == {
        "codec": "h264", "pix_fmt": "yuv420p", "width": 72, "height": 88, "rotation": 90, "mirrored": False, "colour": None,
        "sample_aspect_ratio": "1:1", "field_order": "progressive", "stream": 0}


def test_no_autorotate_keeps_the_stored_orientation(tmp_path):
    from streaming import VideoShardDataset

    src = recording_source(str(tmp_path / "src"), {"rec": {"front": "rotate90"}}, 20)
    out = str(tmp_path / "out")
    write(src, out, max_video_frames=20, encode=EncodeSettings(gop=8, autorotate=False))
    _, samples = read_dataset(out)
    meta = json.loads(samples["rec_00000"]["meta.json"])
    assert meta["autorotate"] is False and meta["view_sizes"]["front"] == {"width": 72, "height": 88}
    clip = str(tmp_path / "clip.mp4")
    with open(clip, "wb") as f:
        f.write(samples["rec_00000"]["front.mp4"])
    # The clip keeps the source's display matrix, so players still show it upright...
    assert ffprobe_stream(clip)["side_data_list"][0]["rotation"] == 90
    source = source_path(src, "rec", "front")
    prove_frames(display_frames(clip), display_frames(source), 0, "player view of the clip")
    # ...and the reader delivers the stored pixels, as `ffmpeg -noautorotate` decodes the source.
    stored = subprocess.run(["ffmpeg", "-v", "error", "-noautorotate", "-i", source, "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
                            check=True, capture_output=True).stdout
    stored = np.frombuffer(stored, np.uint8).reshape(-1, 88, 72, 3)
    item = next(iter(VideoShardDataset(out)))
    prove_frames(item["video"][0].permute(0, 2, 3, 1).numpy(), stored, 0, "reader, stored orientation")


def test_colour_is_carried_into_the_clip_and_recorded(tmp_path):
    src = recording_source(str(tmp_path / "src"), {"rec": {"front": "fullrange", "left": "plain"}}, 20)
    out = str(tmp_path / "out")
    write(src, out, max_video_frames=20)
    _, samples = read_dataset(out)
    meta = json.loads(samples["rec_00000"]["meta.json"])
    tags = {}
    for view in ("front", "left"):
        clip = str(tmp_path / f"{view}.mp4")
        with open(clip, "wb") as f:
            f.write(samples["rec_00000"][f"{view}.mp4"])
        s = ffprobe_stream(clip)
        tags[view] = (s.get("color_range"), s.get("color_space"))
    assert tags == {"front": ("pc", "bt709"), "left": ("tv", "smpte170m")}  # untagged: what the CLI assumed, explicit
    assert meta["view_colour"]["front"] == {"range": "pc", "matrix": "bt709", "primaries": "unknown", "transfer": "unknown"}
    assert meta["view_colour"]["left"] == {"range": "tv", "matrix": "smpte170m", "primaries": "unknown", "transfer": "unknown"}
    assert meta["view_source"]["front"]["colour"]["range"] == "pc"
    assert meta["view_source"]["left"]["colour"] == {"range": "unknown", "matrix": "unknown", "primaries": "unknown",
                                                      "transfer": "unknown"}


def test_hdr_and_10_bit_sources_warn_naming_the_video(tmp_path, caplog):
    src = recording_source(str(tmp_path / "src"), {"hdr_cam": {"front": "plain"}}, 12)
    path = source_path(src, "hdr_cam", "front")
    os.remove(path)
    camera_view(path, 0, 12, args=("-c:v", "libx265", "-pix_fmt", "yuv420p10le", "-color_primaries", "bt2020",
                                   "-color_trc", "smpte2084", "-colorspace", "bt2020nc", "-x265-params", "log-level=error"))
    out = str(tmp_path / "out")
    with caplog.at_level(logging.WARNING, logger="vidshard.write"):
        write(src, out, max_video_frames=12)
    notes = [r.getMessage() for r in caplog.records if "hdr_cam" in r.getMessage()]
    assert any("10-bit" in n for n in notes) and any("PQ" in n and "not tone-mapped" in n for n in notes), notes
    _, samples = read_dataset(out)
    assert json.loads(samples["hdr_cam_00000"]["meta.json"])["view_colour"]["front"] == {
        "range": "tv", "matrix": "bt2020nc", "primaries": "bt2020", "transfer": "smpte2084"}
    # What is delivered is the CLI's (untone-mapped) 8-bit RGB of the source.
    prove_clips(src, out, tmp_path)


def _patch_elst(path: str, out: str, fraction: float) -> None:
    """Shorten the first edit's duration: an edit list that trims the end."""
    data = bytearray(open(path, "rb").read())
    at = data.find(b"elst")
    assert at > 0 and data[at + 4] == 0  # version 0: 32-bit durations
    duration = struct.unpack(">I", data[at + 12 : at + 16])[0]
    struct.pack_into(">I", data, at + 12, int(duration * fraction))
    with open(out, "wb") as f:
        f.write(data)


@pytest.mark.parametrize("kind", ["start", "delay", "end", "both", "midgop"])
def test_frame_count_is_what_the_decoder_outputs(kind, tmp_path):
    base = camera_view(str(tmp_path / "base.mp4"), 0, 40)
    path = str(tmp_path / "view.mp4")
    if kind == "midgop":  # no edit list, no discard flag: the decoder drops what it cannot decode
        path = quirk_view(str(tmp_path / "view.ts"), "midgop", 0, 28)
    elif kind == "start":
        ffmpeg("-ss", "0.5", "-i", base, "-c", "copy", path)
    elif kind == "delay":  # an empty edit: playback starts 0.5 s late, no frame is dropped
        ffmpeg("-itsoffset", "0.5", "-i", base, "-c", "copy", path)
    elif kind == "end":
        _patch_elst(base, path, 0.5)
    else:
        ffmpeg("-ss", "0.5", "-i", base, "-c", "copy", str(tmp_path / "cut.mp4"))
        _patch_elst(str(tmp_path / "cut.mp4"), path, 0.5)
    cli = len(display_frames(path))
    with av.open(path) as c:
        decoded = sum(1 for _ in c.decode(video=0))
    assert probe_view("v", path).num_frames == decoded == cli
    assert cli < 40 or kind == "delay"


def test_same_recordings_same_bytes(tmp_path):
    """Orientation filters and colour tags keep the writer deterministic (any worker count)."""
    src = recording_source(str(tmp_path / "src"), {"a": {"front": "rotate90", "left": "fullrange", "right": "editlist"},
                                                   "b": {"front": "vp9", "left": "plain", "right": "rotate90"}}, 24)
    outs = [str(tmp_path / "one"), str(tmp_path / "two"), str(tmp_path / "runs")]
    write(src, outs[0], max_video_frames=10, overlap=2, workers=1)
    write(src, outs[1], max_video_frames=10, overlap=2, workers=2)
    write(src, outs[2], max_video_frames=10, overlap=2, workers=2, run_frames=1)  # every chunk entered mid-file
    listing = [sorted(os.listdir(o)) for o in outs]
    assert listing[0] == listing[1] == listing[2]
    for name in listing[0]:
        data = []
        for out in outs:
            with open(os.path.join(out, name), "rb") as f:
                data.append(f.read())
        assert data[0] == data[1] == data[2], name
