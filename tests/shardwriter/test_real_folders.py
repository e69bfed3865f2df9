"""Real source folders and real command lines: stray files are skipped with one warning,
ambiguous keypoint names are an error naming both files, and a bad setting is refused
before OUTPUT is touched, so the corrected command just runs."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess

import numpy as np
import pytest

from shardwriter.encode import EncodeSettings
from shardwriter.errors import SourceError, WriterError
from vidshard.cli import main

from ..helpers import VIEWS, read_dataset, write

VID = "session_001"
STRAY = (".DS_Store", "._front.mp4", "Thumbs.db", "desktop.ini", "front.mp4~", ".front.mp4.swp", "#front.mp4#")


def test_stray_files_are_skipped_with_one_warning(source_copy, tmp_path, caplog):
    folder = os.path.join(source_copy, "videos", VID)
    for name in STRAY:
        with open(os.path.join(folder, name), "wb") as f:
            f.write(b"\0\5\26\7junk")
    open(os.path.join(source_copy, "videos", ".DS_Store"), "wb").close()
    kdir = os.path.join(source_copy, "keypoints", VID, "left")
    open(os.path.join(kdir, ".DS_Store"), "wb").close()
    out = str(tmp_path / "out")
    with caplog.at_level(logging.WARNING, logger="vidshard.write"):
        report = write(source_copy, out)
    assert report.videos == 3 and not report.skipped
    index, _ = read_dataset(out)
    assert index["views"] == list(VIEWS)  # never a view named "" or "Thumbs"
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    listing = [w for w in warnings if "not views" in w]
    assert len(listing) == 1 and all(name in listing[0] for name in STRAY), warnings
    assert "8 file(s)" in listing[0]
    assert sum("not keypoint files" in w and kdir in w for w in warnings) == 1


def test_keypoint_names_differing_in_zero_padding_are_an_error(source_copy, tmp_path):
    kdir = os.path.join(source_copy, "keypoints", VID, "left")
    first = os.path.join(kdir, "000012_sam3d_body.npz")
    second = os.path.join(kdir, "0000012_sam3d_body.npz")
    shutil.copy(first, second)
    with pytest.raises(WriterError) as err:  # the scan's report: nothing written
        write(source_copy, str(tmp_path / "out"))
    assert first in str(err.value) and second in str(err.value) and "zero padding" in str(err.value)


BAD_SETTINGS = [
    (["--max-video-frames", "30", "--overlap", "30"], "--overlap (30) must be smaller than --max-video-frames (30)"),
    (["--max-video-frames", "30", "--overlap", "31"], "--overlap (31) must be smaller"),
    (["--max-video-frames", "0"], "--max-video-frames must be >= 1, got 0"),
    (["--max-video-frames", "30", "--gop", "0"], "--gop must be >= 1"),
    (["--max-video-frames", "30", "--views", "front,nope"], "--views names 'nope', which no video"),
    (["--max-video-frames", "30", "--views", "front,front"], "--views lists a view twice"),
    (["--max-video-frames", "30", "--views", "front.x"], "cannot name a tar member"),
    (["--max-video-frames", "30", "--crf", "60"], "--crf must be 0..51"),
    (["--max-video-frames", "30", "--preset", "turbo"], "--preset must be one of"),
    (["--max-video-frames", "30", "--resize", "33x24"], "--resize needs an even width and height"),
]


@pytest.mark.parametrize("bad, message", BAD_SETTINGS, ids=[" ".join(b[2:]) or b[1] for b, _ in BAD_SETTINGS])
def test_bad_settings_are_refused_before_anything_is_written(bad, message, small_source, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["write", small_source, str(out), *bad]) == 2
    err = capsys.readouterr().err
    assert message in err and err.startswith("vidshard write: error:") and "Traceback" not in err
    assert not out.exists() or not any(out.iterdir())  # no job.json, no work folder, nothing
    # The corrected command just runs (the same OUTPUT, nothing to delete by hand).
    assert main(["write", small_source, str(out), "--max-video-frames", "30", "--views", "front,left"]) == 0
    assert (out / "index.json").exists()


def test_source_problems_found_by_listing_write_nothing(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["write", str(tmp_path / "nowhere"), str(out), "--max-video-frames", "30"]) == 2
    assert "no such directory" in capsys.readouterr().err
    assert not out.exists() or not any(out.iterdir())


def test_keypoint_padding_check_reads_only_names(tmp_path):
    """The duplicate check is on names: no file is opened (and a garbage file changes nothing)."""
    from shardwriter.keypoints import list_keypoints

    for name in ("000001_a.npz", "0000001_a.npz"):
        (tmp_path / name).write_bytes(b"not an npz")
    with pytest.raises(SourceError, match="two keypoint files for frame 1 and kind 'a'"):
        list_keypoints("v", str(tmp_path), 10)
    (tmp_path / "0000001_a.npz").unlink()
    np.savez(tmp_path / "000002_a.npz", x=np.zeros(2))
    assert sorted(list_keypoints("v", str(tmp_path), 10)) == [1, 2]


def test_odd_sized_views_are_found_by_the_scan(source_copy, tmp_path):
    """yuv420p clips need even sizes: the scan reports every odd-sized view at once, before
    any video is encoded (not the first one a worker meets), and --resize writes them."""
    odd = []
    for vid in ("session_000", "session_002"):
        path = os.path.join(source_copy, "videos", vid, "left.mp4")
        subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", path, "-vf", "format=yuv444p,crop=63:47:0:0",
                        "-c:v", "libx264", "-pix_fmt", "yuv444p", path + ".mp4"], check=True)
        os.replace(path + ".mp4", path)
        odd.append(path)
    with pytest.raises(WriterError) as err:
        write(source_copy, str(tmp_path / "out"))
    assert all(path in str(err.value) for path in odd) and "got 63x47: pass --resize" in str(err.value)
    report = write(source_copy, str(tmp_path / "resized"), encode=EncodeSettings(gop=8, resize=(64, 48)))
    assert report.videos == 3
