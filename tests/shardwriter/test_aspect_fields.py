"""What a player needs besides the pixels (issue 22, point 10): non-square pixels and
interlacing are carried into the clip's stream and recorded in meta.json; the frames are the
stored ones (what the FFmpeg CLI's rawvideo decode shows), proven against it."""

from __future__ import annotations

import json
import os
import subprocess
from fractions import Fraction

import pytest

from shardwriter.encode import EncodeSettings
from streaming import VideoShardDataset

from ..helpers import read_dataset, write
from ..recordings import FRAMES_PER_VIEW, camera_view, display_frames, psnr, recording_source
from .test_recordings import prove_clips, source_path

FRAMES = 24


def probe(path: str) -> dict:
    out = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries",
                          "stream=sample_aspect_ratio,display_aspect_ratio,field_order", "-of", "json", path],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out)["streams"][0]


def clip(samples: dict, key: str, view: str, tmp_path) -> str:
    path = str(tmp_path / f"{key}.{view}.mp4")
    with open(path, "wb") as f:
        f.write(samples[key][f"{view}.mp4"])
    return path


def source(tmp_path, views: dict[str, tuple[str, ...]]) -> str:
    """One video whose views are real footage encoded by the CLI with `args` each."""
    src = recording_source(str(tmp_path / "src"), {"rec": {v: "plain" for v in views}}, FRAMES)
    for v, (view, args) in enumerate(views.items()):
        path = source_path(src, "rec", view)
        os.remove(path)
        vf = args[0] if args and args[0].startswith("setsar") else ""
        camera_view(path, v, FRAMES, vf=vf, args=args[1:] if vf else args)
    return src


ANAMORPHIC = ("setsar=16/15", "-c:v", "libx264", "-bf", "2", "-g", "12", "-pix_fmt", "yuv420p")


def interlaced(order: str) -> tuple[str, ...]:
    return ("-c:v", "libx264", "-flags", "+ildct+ilme", "-x264-params", f"{order}=1", "-pix_fmt", "yuv420p")


def test_non_square_pixels_are_carried_and_the_stored_pixels_delivered(tmp_path):
    src = source(tmp_path, {"front": ANAMORPHIC, "left": ()})
    assert probe(source_path(src, "rec", "front"))["sample_aspect_ratio"] == "16:15"
    out = str(tmp_path / "out")
    write(src, out, max_video_frames=12)
    metas = prove_clips(src, out, tmp_path)
    _, samples = read_dataset(out)
    assert probe(clip(samples, "rec_00000", "front", tmp_path))["sample_aspect_ratio"] == "16:15"
    assert probe(clip(samples, "rec_00000", "left", tmp_path)).get("sample_aspect_ratio") in (None, "1:1")
    meta = metas["rec_00000"]
    assert meta["view_source"]["front"]["sample_aspect_ratio"] == "16:15"
    assert meta["view_clip"] == {"front": {"sample_aspect_ratio": "16:15", "field_order": "progressive"},
                                 "left": {"sample_aspect_ratio": "1:1", "field_order": "progressive"}}


def test_resized_clips_keep_the_picture_shape(tmp_path):
    src = source(tmp_path, {"front": ANAMORPHIC})
    out = str(tmp_path / "out")
    write(src, out, max_video_frames=FRAMES, encode=EncodeSettings(gop=8, resize=(64, 48)))
    _, samples = read_dataset(out)
    got = probe(clip(samples, "rec_00000", "front", tmp_path))
    want = Fraction(88 * 16, 72 * 15)  # the source's display aspect ratio
    assert Fraction(got["display_aspect_ratio"].replace(":", "/")) == want, got


@pytest.mark.parametrize("order", ["tff", "bff"])
def test_interlaced_sources_give_interlaced_clips_of_the_same_fields(order, tmp_path):
    src = source(tmp_path, {"front": interlaced(order), "left": ()})
    want = {"tff": "tt", "bff": "bb"}[order]
    assert probe(source_path(src, "rec", "front"))["field_order"] == want
    out = str(tmp_path / "out")
    write(src, out, max_video_frames=12)
    metas = prove_clips(src, out, tmp_path)  # every clip frame is the source's stored (woven) frame
    _, samples = read_dataset(out)
    assert probe(clip(samples, "rec_00001", "front", tmp_path))["field_order"] == want
    assert probe(clip(samples, "rec_00001", "left", tmp_path))["field_order"] == "progressive"
    meta = metas["rec_00001"]
    assert meta["view_source"]["front"]["field_order"] == want and meta["view_clip"]["front"]["field_order"] == want
    # The reader delivers the woven frames as stored: each is its own source frame, closer to
    # it than to the neighbours. Its RGB of an interlaced clip is 29-32 dB from the CLI's
    # decode of the same clip (chroma upsampled differently; the progressive view: the same
    # as the CLI's), hence a floor of 28 here and FLOOR_DB for the clips above.
    reference = display_frames(source_path(src, "rec", "front"))
    for item in VideoShardDataset(out, views=["front"]):
        got = item["video"][0].permute(0, 2, 3, 1).numpy()
        for t, f in enumerate(item["frame_index"].tolist()):
            own = psnr(got[t], reference[f])
            assert own >= 28 and all(psnr(got[t], reference[n]) < own for n in (f - 1, f + 1) if 0 <= n < FRAMES), (f, own)


def test_interlaced_views_resized_are_progressive_with_a_warning(tmp_path, caplog):
    src = source(tmp_path, {"front": interlaced("tff")})
    out = str(tmp_path / "out")
    write(src, out, max_video_frames=FRAMES, encode=EncodeSettings(gop=8, resize=(64, 48)))
    _, samples = read_dataset(out)
    assert probe(clip(samples, "rec_00000", "front", tmp_path))["field_order"] == "progressive"
    assert any("interlaced (tt)" in r.getMessage() and "rec" in r.getMessage() for r in caplog.records)


assert FRAMES <= FRAMES_PER_VIEW


@pytest.mark.parametrize("flags", [None, 0, 1 << 5], ids=["libx264-not-asked", "no-simd", "without-avx512"])
def test_interlaced_clips_are_encoded_whatever_the_cpu_says(flags, tmp_path, monkeypatch):
    """The x264 parameters of a field-coded clip join the CPU ones only where the CPU ones
    exist (codec_options leaves them out without AVX-512): a KeyError here on AVX2 machines."""
    import av
    import numpy as np

    import shardwriter.encode as encode

    monkeypatch.setattr(encode, "x264_cpu_flags", lambda: flags)
    path = str(tmp_path / "fields.mp4")
    enc = encode.ClipEncoder(path, Fraction(25), (64, 48), EncodeSettings(gop=4), field_order="tt")
    for i in range(4):
        enc.write(av.VideoFrame.from_ndarray(np.full((48, 64, 3), 40 * i, np.uint8), format="rgb24").reformat(format="yuv420p"))
    assert enc.close() == 4
    probe = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "stream=field_order", "-of", "csv=p=0", path],
                           capture_output=True, text=True, check=True).stdout.strip()
    assert probe == "tt", probe
