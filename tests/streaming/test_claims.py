"""meta.json is checked against the clips it describes (streaming/decode.py `Claims`): a
sample whose meta.json disagrees with its clips, or a clip that changes under way, never
yields a frame other than the one `frame_index` names (proven here from the barcodes in
every delivered frame, in every mode), and is a typed error naming shard, key and member
(`on_error="raise"`), a logged skip (`"skip"`, test_hostile.py runs these cases with the
rest of the corpus, streaming and map-style), and a problem `vidshard verify --decode`
reports."""

from __future__ import annotations

import re
from fractions import Fraction

import pytest

from streaming import VideoShardDataset
from streaming.decode import Claims, ClipDecoder, ClipMismatch
from vidshard.synth import read_barcode
from vidshard.tools.verify import verify

from .hostile_clips import (
    edit_starting_later, edits_playing_twice, meta_next_chunk, meta_rate_times, meta_shifted, meta_view_size, mjpeg_bomb,
    pixel_format_switch, size_switch, with_cover,
)
from .hostile_shards import GiB, change_first, meta_with, replace
from .sandbox import isolated


def _case(name, suffix, builder, kwargs, error, reason, member, skip):
    return (name, lambda p: change_first(p, replace(suffix, builder)), kwargs, error, reason, member, skip)


MP4 = r"\.front\.mp4$"
META = r"\.meta\.json$"
# test_hostile.SAMPLE_CASES' shape: (id, break the copy -> key, options, error, reason, member, skip reason)
CLAIM_CASES = [
    _case("meta-rate-doubled", "meta.json", meta_rate_times(Fraction(2)), {}, "DecodeError",
          r"clip header disagrees with meta.json: frame rate 30 \(meta.json: 60\)", MP4, "decode"),
    _case("meta-rate-five-sixths", "meta.json", meta_rate_times(Fraction(5, 6)), {"img_size": (24, 32)}, "DecodeError",
          r"frame rate 30 \(meta.json: 25\)", MP4, "decode"),
    _case("meta-fps-other-than-its-fps-rational", "meta.json", meta_with(fps=25.0), {}, "ShardFormatError",
          r"meta.json fps 25.0 disagrees with its fps_rational '30/1'", META, "format"),
    _case("meta-gop-a-quarter", "meta.json", meta_with(gop=2), {}, "DecodeError",
          r"frame 2 is not a keyframe: the clip's keyframes are not where meta.json's gop 2 puts them", MP4, "decode"),
    _case("meta-start-shifted", "meta.json", meta_shifted(5), {}, "ShardFormatError",
          r"chunk 1 from frame 29; the key and index.json \(max_video_frames 30, overlap 6\) give .* chunk 1 from frame 24", META,
          "format"),
    _case("meta-of-the-next-chunk", "meta.json", meta_next_chunk(24), {}, "ShardFormatError",
          r"chunk 2 from frame 48; the key .* chunk 1 from frame 24", META, "format"),
    _case("meta-view-size-smaller", "meta.json", meta_view_size("front", 32, 24), {"img_size": (24, 32)}, "DecodeError",
          r"height 48 \(meta.json: 24\), width 64 \(meta.json: 32\)", MP4, "decode"),
    _case("h264-switches-to-2048-squared", "front.mp4", size_switch(2048, 2048), {}, "DecodeError",
          r"clip does not decode|frame 1 decodes to 2048x2048", MP4, "decode"),
    _case("h264-switches-to-32-squared", "front.mp4", size_switch(32, 32), {}, "DecodeError",
          r"frame 1 decodes to 32x32 yuv420p; the clip declares 64x48", MP4, "decode"),
    _case("mjpeg-frame-of-16000-squared", "front.mp4", mjpeg_bomb(), {}, "DecodeError",
          r"codec mjpeg \(meta.json: h264\)", MP4, "decode"),
    _case("cover-picture-stream-first", "front.mp4", with_cover, {}, "DecodeError",
          r"exactly one video stream; this one holds video, video", MP4, "decode"),
    _case("h264-switches-to-yuv444p", "front.mp4", pixel_format_switch(8), {}, "DecodeError",
          r"frame 8 decodes to 64x48 yuv444p; the clip declares 64x48 yuv420p", MP4, "decode"),
]
# Clips whose edit list plays other frames than they store: every pts, count and keyframe
# looks right. The reader reads the samples as stored (the right frames, delivered);
# `verify --decode` reports the clip, which a player would show otherwise.
EDIT_LIST_CASES = [
    _case("edit-list-playing-frames-0-14-twice", "front.mp4", edits_playing_twice(15), {}, None,
          r"the clip's edit list plays \d+ samples other than the 30 it stores", MP4, None),
    _case("edit-list-starting-a-gop-later", "front.mp4", edit_starting_later(8), {}, None,
          r"the clip's edit list plays \d+ samples other than the 30 it stores", MP4, None),
]


@pytest.fixture
def copy(small_dataset, tmp_path):
    import shutil

    dst = str(tmp_path / "ds")
    shutil.copytree(small_dataset, dst)
    return dst


def delivered(path: str, mode: str) -> dict:
    """Every item of a skip-policy epoch, its barcodes read: what the parent checks."""
    ds = VideoShardDataset(path, sample=mode, num_frames=None if mode == "chunk" else 4, on_error="skip", seed=3)
    wrong, keys, padded = [], set(), 0
    for item in ds:
        padded += item["meta"].get("padded", False)
        keys.add(item["meta"]["key"])
        frames = item["frame_index"].tolist()
        for v in range(item["video"].shape[0]):
            got = [read_barcode(item["video"][v, t].numpy()) for t in range(len(frames))]
            if got != [(f, v) for f in frames]:
                wrong.append((item["meta"]["key"], v, frames, got))
    return {"wrong": wrong, "keys": keys, "skipped": ds.state_dict()["skipped"], "padded": padded}


@pytest.mark.parametrize("mode", ["chunk", "segment", "clip"])
@pytest.mark.parametrize("case", CLAIM_CASES + EDIT_LIST_CASES, ids=[c[0] for c in CLAIM_CASES + EDIT_LIST_CASES])
def test_no_frame_is_delivered_under_a_false_frame_index(copy, case, mode):
    _, breaks, _, _, _, _, skip = case
    key = breaks(copy)
    outcome = isolated(delivered, copy, mode, timeout=30)
    assert outcome.kind == "ok", outcome
    result = outcome.value
    assert result["wrong"] == [], result["wrong"][:3]
    if skip is None:  # right data: the sample is delivered, its frames proven above
        assert key in result["keys"] and result["skipped"] == {}, result
    else:  # (in segment mode the sample's items whose frames lie before a mid-stream change are right data)
        assert set(result["skipped"]) == {skip} and (mode == "segment" or key not in result["keys"]), result
    assert outcome.grown < GiB, outcome


@pytest.mark.parametrize("case", CLAIM_CASES + EDIT_LIST_CASES, ids=[c[0] for c in CLAIM_CASES + EDIT_LIST_CASES])
def test_verify_decode_gives_the_readers_reason(copy, case):
    """(test_hostile.py checks that verify --decode reports every case of the corpus.)"""
    name, breaks, _, _, reason, _, _ = case
    key = breaks(copy)
    outcome = isolated(verify, copy, True, timeout=30)
    assert outcome.kind == "ok", outcome
    problems, _ = outcome.value
    assert problems and all(key in p for p in problems), problems
    assert any(re.search(reason, p) for p in problems), problems
    assert outcome.grown < GiB, outcome


def test_each_frame_is_checked_even_where_the_header_agrees(small_dataset, monkeypatch):
    """Defence in depth: with the header check passed over, a frame rate meta.json gets wrong
    still never shifts a frame: the first frame off meta.json's pts grid is refused."""
    from ..helpers import read_dataset

    _, samples = read_dataset(small_dataset)
    key, parts = next(iter(samples.items()))
    original = ClipDecoder._checked_stream

    def unchecked(self, container, claims):  # the header checked against the clip's true rate, the frames against 25 fps
        stream, _, pix_fmt = original(self, container, Claims(frames=claims.frames, height=claims.height, width=claims.width,
                                                              fps=Fraction(30), gop=claims.gop))
        return stream, 1 / (claims.fps * stream.time_base), pix_fmt

    monkeypatch.setattr(ClipDecoder, "_checked_stream", unchecked)
    import numpy as np

    out = np.empty((3, 3, 48, 64), np.uint8)
    claims = Claims(frames=30, height=48, width=64, fps=Fraction(25), gop=8)
    with pytest.raises(ClipMismatch, match=r"decoded frame has pts 512, frame 1 of a 25 fps clip has 614"):
        ClipDecoder().decode(parts["front.mp4"], np.arange(3), claims, None, out)
