"""`vidshard check SOURCE` (issue 22, point 9): every view of the real-recordings corpus
listed; every problem of a SOURCE named at once; exit 0 exactly when write accepts it."""

from __future__ import annotations

import os
import re

import pytest

from shardwriter.errors import WriterError
from vidshard.cli import main

from ..helpers import write
from ..recordings import QUIRKS, camera_view, carphone, ffmpeg, recording_source

FRAMES = 16


def rows(out: str, video: str) -> dict[str, list[str]]:
    """view -> the cells of its row in the video's table."""
    block = out.split(f"video {video}:")[1].split("\nvideo ")[0]
    lines = block.strip().splitlines()[2:]  # status line's rest, header
    return {cells[0]: cells for cells in (re.split(r"\s{2,}", line.strip()) for line in lines) if len(cells) >= 12}


def test_every_view_of_the_real_recordings_is_listed_and_the_source_accepted(tmp_path, capsys):
    src = recording_source(str(tmp_path / "src"), {f"rec_{q}": {"front": q, "left": q} for q in QUIRKS}, FRAMES)
    assert main(["check", src, "--max-video-frames", "8", "--workers", "2"]) == 0
    out = capsys.readouterr().out
    for quirk in QUIRKS:
        table = rows(out, f"rec_{quirk}")
        assert set(table) == {"front", "left"} and all(r[-1] == "ok" for r in table.values()), (quirk, table)
    rotated = rows(out, "rec_rotate90")["front"]
    assert (rotated[2], rotated[4], rotated[5]) == ("72x88", str(FRAMES), "90")  # stored size, frames, rotation
    assert rows(out, "rec_vp9")["front"][1] == "vp9" and rows(out, "rec_fullrange")["front"][6] == "pc/bt709"
    assert rows(out, "rec_ntsc")["front"][3] == "30000/1001"
    assert "14 views: 7 writable, 0 with problems; 0 problems" in out and "write would accept" in out


def test_every_problem_of_a_source_is_named_at_once_and_write_agrees(tmp_path, capsys):
    src = recording_source(str(tmp_path / "src"), {v: {"front": "plain", "left": "plain"} for v in ("good", "odd", "noann",
                                                                                                   "covers")}, FRAMES)
    folder = os.path.join(src, "videos")
    odd = []
    for v, view in enumerate(("front", "left")):  # two odd-sized views in one video: both named
        path = os.path.join(folder, "odd", f"{view}.mp4")
        os.remove(path)
        odd.append(camera_view(path, v, FRAMES, vf=f"scale=8{7 - v}:71", args=("-c:v", "libx264", "-pix_fmt", "yuv444p")))
    annotation = os.path.join(src, "annotations", "noann.json")
    os.remove(annotation)
    cover_only = os.path.join(folder, "covers", "left.mp4")
    os.remove(cover_only)
    ffmpeg("-f", "lavfi", "-i", "sine=duration=1", "-c:a", "aac", str(tmp_path / "tone.m4a"))
    ffmpeg("-i", carphone(), "-frames:v", "1", str(tmp_path / "cover.png"))
    ffmpeg("-i", str(tmp_path / "tone.m4a"), "-i", str(tmp_path / "cover.png"), "-map", "0", "-map", "1", "-c:a", "copy",
           "-c:v", "png", "-disposition:v:0", "attached_pic", cover_only)
    assert main(["check", src, "--workers", "2"]) == 1
    out = capsys.readouterr().out
    problems = out.split("problems (")[1].split("\n", 1)[1]
    assert odd[0] in problems and "87x71" in problems and odd[1] in problems and "86x71" in problems, problems
    assert annotation in problems and "missing annotation JSON" in problems
    assert cover_only in problems and "attached picture" in problems
    assert rows(out, "covers")["left"][-1] == "PROBLEM" and rows(out, "good")["front"][-1] == "ok"
    assert "4 videos, 8 views: 1 writable, 3 with problems; 4 problems" in out and "write would refuse" in out
    with pytest.raises(WriterError) as info:  # write refuses the same SOURCE, naming the same videos
        write(src, str(tmp_path / "out"))
    assert all(f"video {v!r}" in str(info.value) for v in ("odd", "noann", "covers"))


def test_write_runs_the_same_limits_check(tmp_path, capsys):
    """A problem only the reader's limits see (more chunks than the key numbers) fails check too."""
    src = recording_source(str(tmp_path / "src"), {"rec": {"front": "plain"}}, FRAMES)
    assert main(["check", src]) == 0
    capsys.readouterr()
    from streaming.format import CHUNK_DIGITS

    assert CHUNK_DIGITS == 5
    assert main(["check", src, "--max-video-frames", "1"]) == 0  # 16 chunks: fine
    long = os.path.join(src, "videos", "rec", "front.mp4")
    os.remove(long)
    ffmpeg("-f", "lavfi", "-i", "color=c=gray:size=16x16:rate=1000", "-frames:v", "100001", "-c:v", "libx264",
           "-preset", "ultrafast", long)
    capsys.readouterr()
    assert main(["check", src, "--max-video-frames", "1"]) == 1
    assert "100001 chunks" in capsys.readouterr().out
