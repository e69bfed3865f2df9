"""Display matrices and colour: the barcode source with every real-recording quirk, checked
against the FFmpeg CLI (the reference) and then through the writer and the reader."""

from __future__ import annotations

import json
import math
from fractions import Fraction

import av
import pytest

from shardwriter.display import Colour, clip_colour, display_rotation, mirrored, orientation_filters
from shardwriter.encode import EncodeSettings
from shardwriter.errors import WriterError
from streaming import VideoShardDataset
from vidshard.synth import ViewQuirks, read_barcode, synth_source, write_video

from ..helpers import read_dataset, write
from ..recordings import display_frames

ORIENTATIONS = [(r, h) for r in (0, 90, 180, 270) for h in (False, True)]


def _matrix_of(path: str):
    with av.open(path) as c:
        frame = next(c.decode(video=0))
        data = frame.side_data.get("DISPLAYMATRIX")
        import numpy as np

        return tuple(int(v) for v in np.frombuffer(bytes(data), "<i4")) if data is not None else None, frame.rotation


@pytest.mark.parametrize("rotate, hflip", ORIENTATIONS)
def test_synthetic_orientations_display_upright_in_the_cli(rotate, hflip, tmp_path):
    """synth's stored pictures are right: the FFmpeg CLI shows every frame's barcode upright,
    and the display matrix PyAV wrote reads back as written (libavutil's own angle)."""
    path = str(tmp_path / "v.mp4")
    write_video(path, 2, 6, (64, 48), Fraction(30), quirks=ViewQuirks(rotate=rotate, hflip=hflip))
    frames = display_frames(path)
    assert frames.shape[1:3] == (48, 64)
    assert [read_barcode(f) for f in frames] == [(i, 2) for i in range(6)]
    matrix, libav_rotation = _matrix_of(path)
    if rotate or hflip:
        assert round(display_rotation(matrix)) % 360 == libav_rotation % 360 and mirrored(matrix) == hflip
    filters = orientation_filters(matrix)
    assert any(n == "transpose" for n, _ in filters) == (rotate in (90, 270))


def test_odd_rotation_is_a_source_error_unless_kept_stored(tmp_path):
    import os
    import subprocess

    src = str(tmp_path / "src")
    synth_source(src, videos=1, frames=8, views=("front",), keypoints=False)
    path = os.path.join(src, "videos", "session_000", "front.mp4")
    subprocess.run(["ffmpeg", "-v", "error", "-i", path, "-c", "copy", "-metadata:s:v:0", "rotate=45", path + ".mp4"],
                   check=True)
    os.replace(path + ".mp4", path)
    with pytest.raises(WriterError, match="display matrix rotates by 45 degrees .* not a multiple of 90; --no-autorotate"):
        write(src, str(tmp_path / "a"))
    write(src, str(tmp_path / "b"), encode=EncodeSettings(gop=8, autorotate=False))


def test_orientation_filters_follow_the_cli():
    assert orientation_filters(None) == ()
    assert math.isnan(display_rotation((0,) * 9)) and orientation_filters((0, 0, 0, 0, -65536, 0, 0, 0, 1 << 30)) == (
        ("vflip", None),)
    rot90 = (0, -65536, 0, 65536, 0, 0, 0, 0, 1 << 30)  # what `-metadata:s:v rotate=90` writes (FFmpeg 5.1)
    assert display_rotation(rot90) == 90 and orientation_filters(rot90) == (("transpose", "cclock"),)
    rot270 = (0, 65536, 0, -65536, 0, 0, 0, 0, 1 << 30)  # `rotate=270`: ffprobe prints -90, meta.json 270
    assert display_rotation(rot270) == -90 and orientation_filters(rot270) == (("transpose", "clock"),)
    from shardwriter.source import ViewSource

    source = ViewSource(codec="h264", pix_fmt="yuv420p", bit_depth=8, width=72, height=88, matrix=rot270,
                        colour=Colour(), yuv=True)
    assert source.describe()["rotation"] == 270 and not source.describe()["mirrored"]


def test_clip_colour_makes_matrix_and_range_explicit():
    assert clip_colour(Colour(), yuv=True) == Colour(range=1, matrix=6, primaries=2, transfer=2)
    full709 = Colour(range=2, matrix=1, primaries=1, transfer=1)
    assert clip_colour(full709, yuv=True) == full709
    assert clip_colour(Colour(range=2, matrix=0, primaries=1, transfer=13), yuv=False) == Colour(
        range=1, matrix=6, primaries=1, transfer=13)
    assert Colour(range=2, matrix=9, primaries=9, transfer=16).describe() == {
        "range": "pc", "matrix": "bt2020nc", "primaries": "bt2020", "transfer": "smpte2084"}


QUIRKY = {
    "front": ViewQuirks(rotate=90, lead_in=5),
    "left": ViewQuirks(rotate=270, hflip=True, full_range=True),
    "right": ViewQuirks(rotate=180, codec="libvpx-vp9"),
}


@pytest.mark.parametrize("vfr", [False, True])
def test_barcode_source_with_every_quirk_writes_and_streams_frame_exactly(vfr, tmp_path):
    quirks = dict(QUIRKY)
    if vfr:  # VFR views of one video share their timestamps (one average rate): no lead-in, no WebM
        quirks = {v: ViewQuirks(**{**q.__dict__, "vfr": True, "lead_in": 0, "codec": "libx264"}) for v, q in QUIRKY.items()}
    src = str(tmp_path / "src")
    synth_source(src, videos=2, frames=40, views=tuple(quirks), size=(64, 48), quirks=quirks, seed=3)
    out = str(tmp_path / "out")
    report = write(src, out, max_video_frames=16, overlap=2)
    assert report.videos == 2 and not report.skipped
    items = list(VideoShardDataset(out))
    assert len(items) == 2 * 3
    views = list(quirks)
    for item in items:
        frames = item["frame_index"].tolist()
        for v, view in enumerate(views):
            for t, f in enumerate(frames):
                assert read_barcode(item["video"][v, t].numpy()) == (f, v), (item["meta"]["key"], view, t)
    _, samples = read_dataset(out)
    meta = json.loads(samples["session_000_00000"]["meta.json"])
    assert {v: meta["view_source"][v]["rotation"] for v in views} == {"front": 90, "left": 270, "right": 180}
    assert meta["view_source"]["left"]["mirrored"] and meta["view_colour"]["left"]["range"] == "pc"
    assert all(meta["view_sizes"][v] == {"width": 64, "height": 48} for v in views)
