"""The synthetic barcodes: the ground truth every frame-exactness test stands on."""

from __future__ import annotations

import json
import os

import av
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from vidshard.synth import MAX_FRAMES, ViewQuirks, barcode_image, read_barcode, synth_source

from ..helpers import ffmpeg_frames


@given(st.integers(0, MAX_FRAMES - 1), st.integers(0, 15))
def test_barcode_roundtrip(frame, view):
    assert read_barcode(barcode_image(frame, view, 64, 48)) == (frame, view)


@pytest.mark.parametrize("size", [(16, 16), (20, 12), (96, 96)])
def test_barcode_survives_resizing(size):
    for frame in (0, 1, 77, 12345, MAX_FRAMES - 1):
        img = barcode_image(frame, 2, 64, 48)
        f = av.VideoFrame.from_ndarray(np.repeat(img[..., None], 3, axis=2), format="rgb24")
        small = f.reformat(width=size[0], height=size[1], format="rgb24", interpolation="BILINEAR").to_ndarray()
        assert read_barcode(small) == (frame, 2)
        assert read_barcode(small.transpose(2, 0, 1)) == (frame, 2)  # CHW works too


def test_a_wrong_digit_is_detected():
    img = barcode_image(1234, 1, 64, 64)
    img[:16, :16] = 255 - img[:16, :16]
    with pytest.raises(ValueError, match="checksum"):
        read_barcode(img)


def test_synth_source_layout_and_pixels(tmp_path):
    ids = synth_source(str(tmp_path), videos=2, frames=20, views=("front", "left"), size=(32, 32), seed=3)
    assert ids == ["session_000", "session_001"]
    frames = ffmpeg_frames(str(tmp_path / "videos/session_001/left.mp4"), 32, 32)
    assert [read_barcode(f) for f in frames] == [(i, 1) for i in range(20)]
    ann = json.loads((tmp_path / "annotations/session_000.json").read_text())
    assert ann["timeline"] and all(s["end"] <= 20 for s in ann["timeline"])
    kpts = sorted(os.listdir(tmp_path / "keypoints/session_000/front"))
    assert kpts[0] == "000000_sam3d_body.npz" and 0 < len(kpts) < 20  # some frames have none


def test_frames_are_tinted_with_their_label_and_barcodes_still_read(tmp_path):
    from vidshard.synth import LABELS, label_tint

    synth_source(str(tmp_path), videos=1, frames=60, views=("front",), size=(32, 32), seed=5)
    timeline = json.loads((tmp_path / "annotations/session_000.json").read_text())["timeline"]
    frames = ffmpeg_frames(str(tmp_path / "videos/session_000/front.mp4"), 32, 32)
    assert [read_barcode(f) for f in frames] == [(i, 0) for i in range(60)]
    labelled = {f: seg["label"] for seg in timeline for f in range(seg["start"], seg["end"])}
    assert len(set(labelled.values())) > 1 and len(labelled) < 60  # several labels, and a gap
    tints = {LABELS.index(label): np.array(label_tint(LABELS.index(label))) - 128 for label in LABELS}
    for f, rgb in enumerate(frames.astype(np.float32)):
        r, g, b = rgb.reshape(-1, 3).mean(axis=0)
        v_dir, u_dir = r - g, b - g  # grey: both ~0; a tint pushes them along its (U, V) direction
        if f not in labelled:
            assert abs(v_dir) < 6 and abs(u_dir) < 6, f
            continue
        u, v = tints[LABELS.index(labelled[f])]
        closest = min(tints, key=lambda i: (tints[i][0] * 2.0 - u_dir) ** 2 + (tints[i][1] * 2.0 - v_dir) ** 2)
        assert closest == LABELS.index(labelled[f]), (f, labelled[f])


def test_synth_cli_gives_views_real_recording_quirks(tmp_path):
    import subprocess

    from vidshard.cli import main

    out = str(tmp_path / "src")
    assert main(["synth", out, "--videos", "1", "--frames", "12", "--no-keypoints", "--size", "64x48",
                 "--quirk", "left:rotate=90,hflip=1", "--quirk", "right:full_range=1,lead_in=3,vfr=1"]) == 0
    probe = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "stream=width,height,color_range:stream_side_data=rotation",
                            "-of", "compact", os.path.join(out, "videos", "session_000", "left.mp4")],
                           capture_output=True, text=True, check=True).stdout
    assert "width=48|height=64" in probe and "rotation=90" in probe
    with pytest.raises(SystemExit):
        main(["synth", out, "--quirk", "left:spin=3"])
    with pytest.raises(ValueError, match="not among"):
        synth_source(out, videos=1, frames=4, views=("front",), quirks={"back": ViewQuirks(rotate=90)})
