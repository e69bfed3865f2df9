"""Hand-made clips and meta.json files that disagree with each other, for test_claims.py:
each builder returns a member's new bytes (`hostile_shards.replace(suffix, builder)`), as a
buggy or hostile writer would make them. Clips are made with the FFmpeg CLI or PyAV."""

from __future__ import annotations

import functools
import io
import json
import os
import struct
import subprocess
import tempfile
from fractions import Fraction

import av
import numpy as np


def meta_rate_times(factor: Fraction):
    """meta.json states another frame rate than its clips' (their pts, sizes and counts intact)."""
    def change(key, data):
        meta = json.loads(data)
        fps = Fraction(meta["fps_rational"]) * factor
        meta["fps_rational"], meta["fps"] = f"{fps.numerator}/{fps.denominator}", float(fps)
        return json.dumps(meta).encode()
    return change


def meta_shifted(frames: int):
    """meta.json's frame range moved by `frames` (same length: index.json's nframes agree)."""
    def change(key, data):
        meta = json.loads(data)
        meta["start_frame"] += frames
        meta["end_frame"] += frames
        return json.dumps(meta).encode()
    return change


def meta_next_chunk(step: int):
    """meta.json of the video's next chunk (index and frame range) in this sample's place."""
    def change(key, data):
        meta = json.loads(data)
        meta["chunk_index"] += 1
        meta["start_frame"] += step
        meta["end_frame"] += step
        return json.dumps(meta).encode()
    return change


def meta_view_size(view: str, width: int, height: int):
    def change(key, data):
        meta = json.loads(data)
        meta["view_sizes"][view] = {"width": width, "height": height}
        return json.dumps(meta).encode()
    return change


def _frames_of(clip: bytes) -> list[np.ndarray]:
    with av.open(io.BytesIO(clip)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


def _ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-v", "error", "-y", *args], check=True)


def size_switch(width: int, height: int, at: int = 1):
    """The same number of frames, H.264, the header (first SPS) of the original size; from
    frame `at` on the stream switches to width x height (a mid-stream SPS change)."""
    def change(key, clip):
        frames = _frames_of(clip)
        h0, w0 = frames[0].shape[:2]
        with tempfile.TemporaryDirectory() as tmp:
            parts = []
            for i, (size, count) in enumerate((((w0, h0), at), ((width, height), len(frames) - at))):
                part = os.path.join(tmp, f"{i}.h264")
                _ffmpeg("-f", "lavfi", "-i", f"testsrc2=s={size[0]}x{size[1]}:r=30", "-frames:v", str(count),
                        "-c:v", "libx264", "-preset", "ultrafast", "-bf", "0", "-g", "8", "-pix_fmt", "yuv420p", part)
                parts.append(open(part, "rb").read())
            joined = os.path.join(tmp, "joined.h264")
            open(joined, "wb").write(b"".join(parts))
            out = os.path.join(tmp, "clip.mp4")
            _ffmpeg("-r", "30", "-i", joined, "-c", "copy", "-movflags", "+faststart", out)
            return open(out, "rb").read()
    return change


@functools.lru_cache(maxsize=1)
def _huge_jpeg(side: int) -> bytes:
    """One grey JPEG of side x side pixels (16000: 1.5 MB; 768 MB as decoded RGB)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "big.jpg")
        _ffmpeg("-f", "lavfi", "-i", f"color=c=gray:s={side}x{side}:r=1", "-frames:v", "1", "-c:v", "mjpeg", "-q:v", "31", path)
        return open(path, "rb").read()


def mjpeg_bomb(side: int = 16000, at: int = 1):
    """As many MJPEG frames as the clip had, the header of its size; frame `at` is side x side
    (an MJPEG stream may change size at any frame)."""
    def change(key, clip):
        frames = _frames_of(clip)
        with tempfile.TemporaryDirectory() as tmp:
            for i, frame in enumerate(frames):
                path = os.path.join(tmp, f"f{i:05d}.jpg")
                if i == at:
                    open(path, "wb").write(_huge_jpeg(side))
                else:
                    av.VideoFrame.from_ndarray(frame, format="rgb24").to_image().save(path, quality=90)
            out = os.path.join(tmp, "clip.mp4")
            _ffmpeg("-framerate", "30", "-i", os.path.join(tmp, "f%05d.jpg"), "-c", "copy", out)
            return open(out, "rb").read()
    return change


def with_cover(key, clip):
    """The clip with an attached picture stream first (a cover, as phones and editors write)."""
    with tempfile.TemporaryDirectory() as tmp:
        src, cover, out = (os.path.join(tmp, n) for n in ("in.mp4", "cover.png", "out.mp4"))
        open(src, "wb").write(clip)
        av.VideoFrame.from_ndarray(np.full((48, 64, 3), 200, np.uint8), format="rgb24").to_image().save(cover)
        _ffmpeg("-i", cover, "-i", src, "-map", "0", "-map", "1", "-c", "copy", "-disposition:v:0", "attached_pic", out)
        return open(out, "rb").read()


def _box(b: bytes, path: list[bytes], start: int = 0, end: int | None = None, chain: tuple = ()) -> tuple:
    """((offset, type), ...) of the boxes down to `path`'s last, in an MP4's bytes."""
    end = len(b) if end is None else end
    while start < end:
        size, kind = struct.unpack(">I4s", b[start:start + 8])
        if kind == path[0]:
            found = chain + ((start, kind),)
            return found if len(path) == 1 else _box(b, path[1:], start + 8, start + size, found)
        start += size
    raise ValueError(f"no {path[0]!r} box")


def edits_playing_twice(frames: int):
    """The clip's edit list replaced by two edits that both play its first `frames` frames:
    counts, pts, rate and keyframes all look right; frames `frames`.. show frames 0.. again."""
    def change(key, clip):
        b = bytearray(clip)
        chain = _box(b, [b"moov", b"trak", b"edts", b"elst"])
        elst = chain[-1][0]
        count = struct.unpack(">I", b[elst + 12:elst + 16])[0]
        _, media_time, rate = struct.unpack(">Iii", b[elst + 16:elst + 28])
        mvhd = _box(b, [b"moov", b"mvhd"])[-1][0]
        mdhd = _box(b, [b"moov", b"trak", b"mdia", b"mdhd"])[-1][0]
        timescale = struct.unpack(">I", b[mdhd + 20:mdhd + 24])[0]
        with av.open(io.BytesIO(clip)) as c:
            fps = c.streams.video[0].average_rate
        span = round(frames / fps * timescale)
        struct.pack_into(">II", b, mvhd + 20, timescale, 2 * span)  # movie time in the media's units
        struct.pack_into(">I", b, _box(b, [b"moov", b"trak", b"tkhd"])[-1][0] + 28, 2 * span)
        new = struct.pack(">Iii", span, media_time, rate) * 2
        delta = len(new) - 12 * count
        b[elst + 16:elst + 16 + 12 * count] = new
        struct.pack_into(">I", b, elst + 12, 2)
        for offset, _ in chain:  # every enclosing box grows
            struct.pack_into(">I", b, offset, struct.unpack(">I", b[offset:offset + 4])[0] + delta)
        stco = _box(b, [b"moov", b"trak", b"mdia", b"minf", b"stbl", b"stco"])[-1][0]
        for k in range(struct.unpack(">I", b[stco + 12:stco + 16])[0]):  # moov before mdat: chunks move by delta
            at = stco + 16 + 4 * k
            struct.pack_into(">I", b, at, struct.unpack(">I", b[at:at + 4])[0] + delta)
        return bytes(b)
    return change


def edit_starting_later(frames: int):
    """The clip's one edit starts `frames` frames later: the first frames are cut from play."""
    def change(key, clip):
        with av.open(io.BytesIO(clip)) as c:
            s = c.streams.video[0]
            ticks = int(1 / (s.average_rate * s.time_base))
        b = bytearray(clip)
        elst = _box(b, [b"moov", b"trak", b"edts", b"elst"])[-1][0]
        assert b[elst + 8] == 0  # version 0: 32-bit fields
        media_time = struct.unpack(">i", b[elst + 20:elst + 24])[0]
        struct.pack_into(">i", b, elst + 20, media_time + frames * ticks)
        return bytes(b)
    return change


def pixel_format_switch(at: int = 8):
    """The clip's own frames re-encoded as H.264, yuv420p for `at` frames, then yuv444p (a
    mid-stream SPS change of chroma format); the header says yuv420p."""
    def change(key, clip):
        with tempfile.TemporaryDirectory() as tmp:
            src = os.path.join(tmp, "in.mp4")
            open(src, "wb").write(clip)
            parts = []
            for i, (fmt, select) in enumerate((("yuv420p", f"lt(n\\,{at})"), ("yuv444p", f"gte(n\\,{at})"))):
                part = os.path.join(tmp, f"{i}.h264")
                _ffmpeg("-i", src, "-vf", f"select={select},setpts=N/FRAME_RATE/TB", "-c:v", "libx264", "-preset", "ultrafast",
                        "-bf", "0", "-g", "8", "-crf", "0", "-pix_fmt", fmt, part)
                parts.append(open(part, "rb").read())
            joined, out = os.path.join(tmp, "j.h264"), os.path.join(tmp, "clip.mp4")
            open(joined, "wb").write(b"".join(parts))
            _ffmpeg("-r", "30", "-i", joined, "-c", "copy", "-movflags", "+faststart", out)
            return open(out, "rb").read()
    return change
