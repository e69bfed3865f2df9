"""Which stream of a view file is the video, and at what rate (issue 22, points 1-3).

Sources are real footage (tests/recordings.py) made into covers, 59.94 Matroska and raw
elementary streams by the FFmpeg CLI; every clip frame is proven against the CLI's decode
of the source as a player shows it (`ffmpeg -i FILE` with no -map: the stream it plays).
"""

from __future__ import annotations

import os
import subprocess
from fractions import Fraction

import pytest

from shardwriter.errors import WriterError
from shardwriter.media import camera_rate, same_rate
from shardwriter.source import probe_view

from ..helpers import read_dataset, write
from ..recordings import camera_view, carphone, ffmpeg, recording_source
from .test_recordings import prove_clips

FRAMES = 24


def ffprobe_rate(path: str) -> Fraction:
    out = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "V", "-show_entries", "stream=r_frame_rate",
                          "-of", "csv=p=0", path], check=True, capture_output=True, text=True).stdout.split()
    return Fraction(out[0])


def with_cover(path: str, view: int, tmp_path) -> str:
    """A view whose file holds a cover picture (a still of other footage, larger than the
    video) as its first video stream, as `ffmpeg -disposition:v:0 attached_pic` writes it:
    mp4 stores it as an attached picture (`covr`); this CLI's Matroska muxer writes a one-frame
    picture track first, not flagged default."""
    base = camera_view(str(tmp_path / f"base{view}.mp4"), view, FRAMES)
    ext = os.path.splitext(path)[1]
    cover = str(tmp_path / f"cover{view}.{'png' if ext == '.mp4' else 'jpg'}")
    ffmpeg("-ss", "1", "-i", carphone(), "-frames:v", "1", "-vf", "hflip", cover)  # 176x144, not a frame of the view
    ffmpeg("-i", cover, "-i", base, "-map", "0", "-map", "1", "-c:v:0", "png" if ext == ".mp4" else "mjpeg",
           "-c:v:1", "copy", "-disposition:v:0", "attached_pic", "-disposition:v:1", "default", path)
    return path


def test_a_cover_picture_is_never_taken_for_the_video(tmp_path):
    src = recording_source(str(tmp_path / "src"), {"rec": {"front": "plain", "left": "plain"}}, FRAMES)
    folder = os.path.join(src, "videos", "rec")
    for name in os.listdir(folder):
        os.remove(os.path.join(folder, name))
    with_cover(os.path.join(folder, "front.mp4"), 0, tmp_path)
    with_cover(os.path.join(folder, "left.mkv"), 1, tmp_path)
    first = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries", "stream=codec_name",
                            "-of", "csv=p=0", os.path.join(folder, "left.mkv")], capture_output=True, text=True).stdout
    assert first.strip() == "mjpeg"  # stream 0 of the Matroska file is the picture
    out = str(tmp_path / "out")
    report = write(src, out, max_video_frames=10)
    assert report.videos == 1 and report.chunks == 3
    metas = prove_clips(src, out, tmp_path)  # the CLI's decode of the source: the stream a player plays
    meta = metas["rec_00000"]
    assert meta["video_frames"] == FRAMES and meta["fps_rational"] == "30000/1001"
    assert meta["view_source"]["left"]["stream"] == 1 and meta["view_source"]["left"]["codec"] == "h264"
    assert meta["view_source"]["front"]["codec"] == "h264"
    assert probe_view("rec", os.path.join(folder, "front.mp4")).source.covers == 1


def test_a_file_of_covers_only_is_refused_naming_it(tmp_path):
    src = recording_source(str(tmp_path / "src"), {"rec": {"front": "plain"}}, FRAMES)
    path = os.path.join(src, "videos", "rec", "front.mp4")
    os.remove(path)
    audio = str(tmp_path / "tone.m4a")
    ffmpeg("-f", "lavfi", "-i", "sine=duration=1", "-c:a", "aac", audio)
    cover = str(tmp_path / "cover.png")
    ffmpeg("-i", carphone(), "-frames:v", "1", cover)
    ffmpeg("-i", audio, "-i", cover, "-map", "0", "-map", "1", "-c:a", "copy", "-c:v", "png",
           "-disposition:v:0", "attached_pic", path)
    with pytest.raises(WriterError) as info:
        write(src, str(tmp_path / "out"))
    assert path in str(info.value) and "attached picture" in str(info.value)


def test_59_94_in_matroska_and_mp4_is_one_rate(tmp_path):
    src = recording_source(str(tmp_path / "src"), {"rec": {"front": "plain"}}, FRAMES)
    folder = os.path.join(src, "videos", "rec")
    os.remove(os.path.join(folder, "front.mp4"))
    for view, ext in ((0, "mp4"), (1, "mkv")):
        camera_view(os.path.join(folder, f"{('front', 'left')[view]}.{ext}"), view, FRAMES, vf="setpts=N*1001/60000/TB",
                    args=("-r", "60000/1001", "-c:v", "libx264", "-bf", "2", "-g", "12", "-pix_fmt", "yuv420p"))
    assert ffprobe_rate(os.path.join(folder, "left.mkv")) == Fraction(19001, 317)  # what FFmpeg reads in Matroska
    out = str(tmp_path / "out")
    write(src, out, max_video_frames=12)
    metas = prove_clips(src, out, tmp_path)
    assert {m["fps_rational"] for m in metas.values()} == {"60000/1001"}
    index, _ = read_dataset(out)
    assert index["fps"] == pytest.approx(60000 / 1001, abs=0)


def test_rates_compare_as_a_camera_would():
    assert camera_rate(Fraction(19001, 317)) == Fraction(60000, 1001)
    assert camera_rate(Fraction(29011, 242)) == Fraction(120000, 1001)
    assert camera_rate(Fraction(30)) == 30 and camera_rate(Fraction(30000, 1001)) == Fraction(30000, 1001)
    assert camera_rate(Fraction(12345, 1000)) == Fraction(12345, 1000)  # no standard rate near: kept
    assert not same_rate(Fraction(30000, 1001), Fraction(30))  # NTSC 29.97 is not 30
    assert same_rate(Fraction(19001, 317), Fraction(60000, 1001))


def test_a_raw_h264_view_takes_the_rate_it_declares(tmp_path):
    src = recording_source(str(tmp_path / "src"), {"rec": {"front": "plain"}}, FRAMES)
    folder = os.path.join(src, "videos", "rec")
    os.remove(os.path.join(folder, "front.mp4"))
    path = camera_view(os.path.join(folder, "front.h264"), 0, FRAMES, vf="setpts=N/30/TB",
                       args=("-r", "30", "-c:v", "libx264", "-bf", "2", "-g", "12", "-pix_fmt", "yuv420p"))
    assert ffprobe_rate(path) == 30  # the stream's declared rate (its demuxer alone would say 25)
    out = str(tmp_path / "out")
    write(src, out, max_video_frames=FRAMES)
    metas = prove_clips(src, out, tmp_path)
    assert metas["rec_00000"]["fps_rational"] == "30/1" and metas["rec_00000"]["video_frames"] == FRAMES
    _, samples = read_dataset(out)
    clip = str(tmp_path / "clip.mp4")
    with open(clip, "wb") as f:
        f.write(samples["rec_00000"]["front.mp4"])
    assert ffprobe_rate(clip) == 30


def test_a_raw_stream_that_declares_no_rate_is_refused_naming_it(tmp_path):
    src = recording_source(str(tmp_path / "src"), {"rec": {"front": "plain"}}, FRAMES)
    folder = os.path.join(src, "videos", "rec")
    os.remove(os.path.join(folder, "front.mp4"))
    path = camera_view(os.path.join(folder, "front.mjpeg"), 0, FRAMES, args=("-c:v", "mjpeg", "-f", "mjpeg"))
    with pytest.raises(WriterError) as info:
        write(src, str(tmp_path / "out"))
    message = str(info.value)
    assert path in message and "declares no frame rate" in message, message
