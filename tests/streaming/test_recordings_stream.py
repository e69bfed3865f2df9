"""Streaming real recordings: every delivered frame, in the colours the clip declares, is the
source frame as the FFmpeg CLI displays it."""

from __future__ import annotations

import io
import os
import subprocess
from fractions import Fraction

import av
import numpy as np
import pytest

from streaming import VideoShardDataset
from streaming.decode import Claims, ClipDecoder

from ..helpers import write
from ..recordings import FRAMES_PER_VIEW, display_frames, prove_frames, psnr, recording_source

# One video per row of the issue, every view a different quirk where the views may differ
# (VFR views of one video must share their timestamps: views are matched by frame index at
# one rate).
MIXED = {
    "cam_a": {"front": "editlist", "left": "rotate90", "right": "fullrange"},
    "cam_b": {"front": "vp9", "left": "ntsc", "right": "plain"},
    "cam_c": {"front": "vfr", "left": "vfr", "right": "vfr"},
}


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    root = tmp_path_factory.mktemp("mixed")
    src = recording_source(str(root / "src"), MIXED, FRAMES_PER_VIEW)
    out = str(root / "out")
    report = write(src, out, max_video_frames=16, overlap=3)  # no flags for any quirk
    assert report.videos == 3 and not report.skipped
    return src, out


def _source(src, vid, view):
    folder = os.path.join(src, "videos", vid)
    return os.path.join(folder, next(n for n in os.listdir(folder) if n.partition(".")[0] == view))


def test_mixed_source_streams_every_frame_as_displayed(mixed):
    src, out = mixed
    refs = {(vid, view): display_frames(_source(src, vid, view)) for vid, views in MIXED.items() for view in views}
    items = list(VideoShardDataset(out))
    assert sorted((i["meta"]["video_id"], i["meta"]["chunk_index"]) for i in items) == [
        (vid, c) for vid in sorted(MIXED) for c in range(3)]
    lowest = {}
    for item in items:
        meta, video = item["meta"], item["video"]
        frames = item["frame_index"].tolist()
        assert frames == list(range(meta["start_frame"], meta["end_frame"]))
        for v, view in enumerate(meta["views"]):
            got = video[v].permute(0, 2, 3, 1).numpy()
            low = prove_frames(got, refs[meta["video_id"], view], frames[0], f"{meta['key']} {view}")
            lowest[MIXED[meta["video_id"]][view]] = min(low, lowest.get(MIXED[meta["video_id"]][view], 99))
    assert set(lowest) == {"editlist", "rotate90", "fullrange", "vp9", "ntsc", "plain", "vfr"}


def _tagged_bars(path: str, matrix: str | None, rng: str | None, width: int = 88) -> None:
    """Colour bars (saturated: every matrix gives other RGB), tagged with a matrix and range
    (None: no tag, as an encoder that says nothing writes it)."""
    tags = (["-colorspace", matrix] if matrix else []) + (["-color_range", rng] if rng else [])
    pix = "yuvj420p" if rng == "pc" else "yuv420p"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", f"smptehdbars=s={width}x72:d=0.2:r=30",
                    "-c:v", "libx264", "-crf", "10", "-g", "4", "-bf", "0", "-pix_fmt", pix, *tags, path], check=True)


# Every matrix the writer can tag a clip with (shardwriter.display.YUV_MATRICES), in both ranges.
WRITER_COLOURS = [(m, r) for m in ("bt709", "smpte170m", "bt470bg", "bt2020nc", "fcc", "smpte240m", "bt2020c")
                  for r in ("tv", "pc")]


# 88 px wide takes the packed rgb24 path here (swscale's gbrp tail bug), 96 the planar gbrp
# one: both convert with the clip's colour.
@pytest.mark.parametrize("width", [88, 96])
@pytest.mark.parametrize("matrix, rng", WRITER_COLOURS + [(None, None)])
def test_reader_converts_with_the_clips_matrix_and_range(matrix, rng, width, tmp_path):
    path = str(tmp_path / "bars.mp4")
    _tagged_bars(path, matrix, rng, width)
    if matrix is None:
        assert "color_space" not in subprocess.run(
            ["ffprobe", "-v", "error", "-show_entries", "stream=color_space", "-of", "default=nw=1", path],
            capture_output=True, text=True).stdout.replace("color_space=unknown", "")
    reference = display_frames(path)
    data = open(path, "rb").read()
    out = np.empty((len(reference), 3, 72, width), np.uint8)
    ClipDecoder().decode(data, np.arange(len(reference)), Claims(frames=len(reference), height=72, width=width, fps=Fraction(30), gop=4), None, out)
    got = out.transpose(0, 2, 3, 1)
    # The CLI is FFmpeg 5.1 and the reader PyAV's own FFmpeg: the same conversion, give or
    # take a rounding step. Any other matrix or range is 8+ levels off on these bars.
    assert np.abs(got.astype(int) - reference).mean() < 1.0
    assert psnr(got, reference) > 40


def _flat_blocks(full: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """[T, H, W, 3] -> (its 2x2 block means [T, H/2, W/2, 3], where a block and its four
    neighbours are one colour): the pixels any 2x downscaler must give exactly, whatever it
    does at edges."""
    t, h, w, _ = full.shape
    blocks = full.astype(np.float64).reshape(t, h // 2, 2, w // 2, 2, 3)
    means = blocks.mean(axis=(2, 4))
    flat = (blocks == blocks[:, :, :1, :, :1]).all(axis=(2, 4, 5))
    for axis in (1, 2):
        for shift in (1, -1):
            flat &= np.roll(flat, shift, axis) & (means == np.roll(means, shift, axis)).all(-1)
    return means, flat


@pytest.mark.parametrize("matrix, rng", WRITER_COLOURS)
def test_reader_converts_resized_frames_with_the_clips_colour(matrix, rng, tmp_path):
    """img_size: scaled and converted in one swscale call (the planar path), with the clip's
    matrix and range. Measured on the bars' flat insides: 0.4 levels off at most; another
    matrix or range is 2.2-11 levels off (where it gives other RGB at all)."""
    path = str(tmp_path / "bars.mp4")
    _tagged_bars(path, matrix, rng, 96)
    reference, flat = _flat_blocks(display_frames(path))
    assert flat.mean() > 0.2  # a quarter of the picture, colour bars included
    out = np.empty((len(reference), 3, 36, 48), np.uint8)
    ClipDecoder().decode(open(path, "rb").read(), np.arange(len(reference)), Claims(frames=len(reference), height=72, width=96, fps=Fraction(30), gop=4), (36, 48), out)
    error = np.abs(out.transpose(0, 2, 3, 1) - reference)[flat]
    assert error.mean() < 1.0, error.mean()


@pytest.mark.parametrize("width", [64, 66, 72, 88, 90, 100])
def test_reader_is_right_at_widths_swscale_gets_wrong(width, tmp_path):
    """PyAV 18.1's swscale leaves the last width % 16 columns of an unscaled yuv420p -> gbrp
    conversion unwritten for width % 16 in 2..8 (see ClipDecoder._unscaled_planar_ok)."""
    path = str(tmp_path / "noise.mp4")
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", f"testsrc2=s={width}x48:d=0.1:r=30",
                    "-c:v", "libx264", "-crf", "10", "-g", "3", "-bf", "0", "-pix_fmt", "yuv420p", path], check=True)
    reference = display_frames(path)
    out = np.empty((len(reference), 3, 48, width), np.uint8)
    ClipDecoder().decode(open(path, "rb").read(), np.arange(len(reference)), Claims(frames=len(reference), height=48, width=width, fps=Fraction(30), gop=3), None, out)
    assert np.array_equal(out.transpose(0, 2, 3, 1), reference)


def test_clip_declares_the_colour_meta_json_records(mixed):
    """The reader converts with the clip's own tags; meta.json's view_colour says the same."""
    import json

    from ..helpers import read_dataset

    _, out = mixed
    _, samples = read_dataset(out)
    codes = {"pc": 2, "tv": 1, "bt709": 1, "smpte170m": 6}
    for key, parts in samples.items():
        colour = json.loads(parts["meta.json"])["view_colour"]
        for view, tags in colour.items():
            with av.open(io.BytesIO(parts[f"{view}.mp4"])) as c:
                context = c.streams.video[0].codec_context
                assert (context.color_range, context.colorspace) == (codes[tags["range"]], codes[tags["matrix"]]), key
    assert json.loads(samples["cam_a_00000"]["meta.json"])["view_colour"]["right"]["range"] == "pc"
