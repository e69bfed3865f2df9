"""Every clip holds exactly source frames [start_frame, end_frame) of its view, proven from
the decoded pixels (barcodes) with the FFmpeg CLI as the decoder."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess

import pytest

from shardwriter.encode import EncodeSettings
from vidshard.synth import read_barcode, synth_source

from ..helpers import VIEWS, ffmpeg_frames, read_dataset, write
from .test_writer_resume import digests


def assert_frame_exact(out: str, tmp_path, expected_chunks: int | None = None) -> None:
    index, samples = read_dataset(out)
    assert len(samples) == index["totals"]["chunks"]
    if expected_chunks is not None:
        assert len(samples) == expected_chunks
    for key, members in samples.items():
        meta = json.loads(members["meta.json"])
        for v, view in enumerate(meta["views"]):
            clip = tmp_path / f"{key}.{view}.mp4"
            clip.write_bytes(members[f"{view}.mp4"])
            size = meta["view_sizes"][view]
            frames = ffmpeg_frames(str(clip), size["width"], size["height"])
            got = [read_barcode(f) for f in frames]
            want = [(i, VIEWS.index(view)) for i in range(meta["start_frame"], meta["end_frame"])]
            assert got == want, f"{key}.{view}.mp4"


def transcode(src: str, dst: str, args: list[str], ext: str = "mp4") -> None:
    """A copy of the source with every view re-encoded by the FFmpeg CLI."""
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("*.mp4"))
    for vid in os.listdir(os.path.join(src, "videos")):
        for name in os.listdir(os.path.join(src, "videos", vid)):
            view = name.partition(".")[0]
            subprocess.run(
                ["ffmpeg", "-v", "error", "-y", "-i", os.path.join(src, "videos", vid, name), *args,
                 os.path.join(dst, "videos", vid, f"{view}.{ext}")],
                check=True,
            )


# run_frames 1: every chunk its own encode task, entering its views at a keyframe mid-file.
@pytest.mark.parametrize("run_frames", [None, 1])
@pytest.mark.parametrize("overlap", [0, 7])
def test_h264_bframes_source(small_source, tmp_path, overlap, run_frames):
    out = str(tmp_path / "out")
    write(small_source, out, max_video_frames=30, overlap=overlap, run_frames=run_frames)
    # 75 frames: overlap 0 -> 3 chunks per video; overlap 7 (step 23) -> [0,30) [23,53) [46,75)
    assert_frame_exact(out, tmp_path, expected_chunks=9)


@pytest.mark.parametrize(
    "name, args, ext",
    [
        ("hevc", ["-c:v", "libx265", "-x265-params", "log-level=error"], "mp4"),
        ("mpeg4-bframes-avi", ["-c:v", "mpeg4", "-bf", "2", "-q:v", "3"], "avi"),
        ("h264-10bit-mkv", ["-c:v", "libx264", "-g", "12", "-pix_fmt", "yuv420p10le"], "mkv"),
        ("start-offset", ["-c:v", "libx264", "-g", "12", "-output_ts_offset", "7.5"], "mp4"),
        # Keyframes every 12 frames, so short runs enter every view mid-file: open GOPs (HEVC's
        # CRA, H.264 recovery points) whose leading frames need the GOP before, VP9, intra-only
        # MJPEG; intra refresh (frames MPEG-TS flags as keyframes that decode damaged after a
        # seek: never entered there); a raw stream (no timestamps: its video kept whole, logged).
        ("hevc-open-gop", ["-c:v", "libx265", "-x265-params", "log-level=error:keyint=12:min-keyint=12:open-gop=1:bframes=3"],
         "mp4"),
        ("h264-open-gop-ts", ["-c:v", "libx264", "-bf", "3", "-g", "12", "-x264-params", "open-gop=1"], "ts"),
        ("vp9", ["-c:v", "libvpx-vp9", "-g", "12", "-deadline", "realtime", "-b:v", "500k"], "webm"),
        ("mjpeg", ["-c:v", "mjpeg", "-q:v", "3"], "avi"),
        ("h264-intra-refresh-ts", ["-c:v", "libx264", "-bf", "0", "-x264-params", "intra-refresh=1:keyint=12"], "ts"),
        ("h264-raw", ["-c:v", "libx264", "-g", "12", "-bf", "2"], "h264"),
    ],
)
def test_other_sources(small_source, tmp_path, name, args, ext, caplog):
    """Whole-video tasks, and one chunk per task (every view entered mid-file at a keyframe):
    every frame the source frame it claims, and the same bytes both ways."""
    src = str(tmp_path / name)
    transcode(small_source, src, args, ext)
    whole, runs = str(tmp_path / "whole"), str(tmp_path / "runs")
    write(src, whole, max_video_frames=10, overlap=5)
    with caplog.at_level(logging.WARNING, logger="vidshard.write"):
        write(src, runs, max_video_frames=10, overlap=5, run_frames=1)
    assert_frame_exact(runs, tmp_path)
    assert digests(runs) == digests(whole)
    # Entered at keyframes wherever the file has timestamps (an entry that fails is logged and
    # decoded from the start: the frames above would pass either way).
    fallbacks = [r.getMessage() for r in caplog.records if "cannot be entered" in r.getMessage()]
    if name == "h264-raw":
        assert fallbacks and all("a raw stream has no timestamps to seek to" in m and "encoded as one task" in m
                                 for m in fallbacks), fallbacks
    elif name == "h264-open-gop-ts":  # after a seek, FFmpeg's decoder starts at the keyframe after an open GOP's
        assert all(int(re.search(r"before frame (\d+)", m).group(1)) < 24 for m in fallbacks), fallbacks
    elif name == "h264-intra-refresh-ts":  # no frame it restarts at: every run after the first from the start
        assert fallbacks and all("cannot be entered at a keyframe before frame" in m for m in fallbacks), fallbacks
    else:  # a view with no keyframe after frame 0 keeps its video whole; the others entered mid-file
        whole_videos = {m.split(":")[0] for m in fallbacks if "no keyframe after frame 0" in m and "one task" in m}
        assert len(whole_videos) == len(fallbacks) and (name == "hevc" or not fallbacks), fallbacks


def test_resize_keeps_frames(small_source, tmp_path):
    out = str(tmp_path / "out")
    write(small_source, out, max_video_frames=50, encode=EncodeSettings(gop=8, resize=(32, 24)))
    index, samples = read_dataset(out)
    assert index["encoder"]["resize"] == [32, 24]
    assert_frame_exact(out, tmp_path)


def test_clip_structure_for_readers(small_dataset, tmp_path):
    """Constant rate, keyframe every gop frames starting at 0, no B-frames, moov first."""
    _, samples = read_dataset(small_dataset)
    key, members = sorted(samples.items())[0]
    clip = tmp_path / "c.mp4"
    clip.write_bytes(members["front.mp4"])
    assert members["front.mp4"][4:8] == b"ftyp" and b"moov" in members["front.mp4"][:64]
    probe = subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries", "frame=key_frame,pict_type,pts",
         "-of", "json", str(clip)], check=True, capture_output=True, text=True,
    )
    frames = json.loads(probe.stdout)["frames"]
    assert [f["key_frame"] for f in frames] == [int(i % 8 == 0) for i in range(len(frames))]
    assert "B" not in {f["pict_type"] for f in frames}
    pts = [f["pts"] for f in frames]
    assert len(set(b - a for a, b in zip(pts, pts[1:]))) == 1  # constant frame rate


def test_source_synth_odd_fps(tmp_path):
    src = str(tmp_path / "src")
    from fractions import Fraction

    synth_source(src, videos=1, frames=20, views=("front",), size=(32, 32), fps=Fraction(30000, 1001), keypoints=False)
    out = str(tmp_path / "out")
    write(src, out, max_video_frames=8)
    index, samples = read_dataset(out)
    meta = json.loads(samples["session_000_00000"]["meta.json"])
    assert meta["fps_rational"] == "30000/1001" and index["fps"] == pytest.approx(29.97, abs=0.01)
    assert_frame_exact(out, tmp_path, expected_chunks=3)


def test_a_view_whose_count_disagrees_after_entering_is_decoded_from_its_start(small_source, tmp_path):
    """An entered view must count, at every keyframe it passes, the index the probe found there;
    where it does not (here: the probe's record tampered with), that view is decoded again from
    the file's start, the run's result says so, and its frames are still the source frames."""
    import dataclasses
    import tarfile

    from shardwriter.media import Entries
    from shardwriter.probe import ProbeTask, run_probe_task
    from shardwriter.task import RunTask, run_encode_task

    probe = run_probe_task(ProbeTask(source=small_source, video_id="session_001", views=VIEWS, truncate_views=False,
                                     encode=EncodeSettings(gop=8)))
    front = probe.spec.entries[0]
    assert [f for f, _ in front.points] == [30, 64]  # the synthetic views' keyframes
    tampered = Entries(points=(front.points[0], (63, front.points[1][1])))
    spec = dataclasses.replace(probe.spec, entries=(tampered, *probe.spec.entries[1:]))
    work = str(tmp_path / "work")
    # chunks 3..6 of 10 frames: frames [30, 70), entered at keyframe 30, passing keyframe 64
    result = run_encode_task(RunTask(spec=spec, max_video_frames=10, overlap=0, encode=EncodeSettings(gop=8),
                                     keypoint_schema=probe.schema, keypoint_origin=probe.origin, work=work, first=3, stop=7))
    assert [n for n in result.notes if "its frame count disagreed" in n and "front" in n], result.notes
    for record in result.chunks:
        with tarfile.open(os.path.join(work, "spool", f"{record.key}.tar")) as tar:
            for v, view in enumerate(VIEWS):
                clip = tmp_path / f"{record.key}.{view}.mp4"
                clip.write_bytes(tar.extractfile(f"{record.key}.{view}.mp4").read())
                got = [read_barcode(f) for f in ffmpeg_frames(str(clip), 64, 48)]
                assert got == [(i, v) for i in range(record.start, record.end)], (record.key, view)


def test_mpeg_ts_files_joined_with_cat(small_source, tmp_path, caplog):
    """Two MPEG-TS recordings joined with `cat`: the timestamps jump back mid-file, so the
    second half's keyframes are not where their timestamps put them. Written whole as before;
    split into one chunk per task, the same bytes (no keyframe taken for an entry that is not
    a clean cut)."""
    src = str(tmp_path / "joined")
    shutil.copytree(small_source, src, ignore=shutil.ignore_patterns("*.mp4"))
    for vid in os.listdir(os.path.join(small_source, "videos")):
        for name in os.listdir(os.path.join(small_source, "videos", vid)):
            view, path = name.partition(".")[0], os.path.join(small_source, "videos", vid, name)
            parts = [str(tmp_path / f"{vid}-{view}-{i}.ts") for i in range(2)]
            for part, offset in zip(parts, ("0", "0.54")):
                subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", path, "-c:v", "libx264", "-g", "12", "-bf", "2",
                                "-output_ts_offset", offset, part], check=True)
            with open(os.path.join(src, "videos", vid, f"{view}.ts"), "wb") as out:
                for part in parts:
                    out.write(open(part, "rb").read())
        with open(os.path.join(src, "annotations", f"{vid}.json")) as f:
            annotation = json.load(f)
        annotation["timeline"] = [{"start": 0, "end": 150, "label": "joined"}]
        with open(os.path.join(src, "annotations", f"{vid}.json"), "w") as f:
            json.dump(annotation, f)
        shutil.rmtree(os.path.join(src, "keypoints", vid), ignore_errors=True)
    whole, runs = str(tmp_path / "whole"), str(tmp_path / "runs")
    write(src, whole, max_video_frames=10)
    with caplog.at_level(logging.WARNING, logger="vidshard.write"):
        write(src, runs, max_video_frames=10, run_frames=1)
    assert digests(runs) == digests(whole)
    index, samples = read_dataset(whole)
    assert index["totals"]["frames"] == 3 * 150
    _, members = sorted(samples.items())[0]
    clip = tmp_path / "first.mp4"
    clip.write_bytes(members["front.mp4"])
    assert [read_barcode(f) for f in ffmpeg_frames(str(clip), 64, 48)] == [(i, 0) for i in range(10)]
