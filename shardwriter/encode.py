"""Frame-exact clip encoding with PyAV: decode the source views in lockstep, once, and feed
each frame to the encoders of every chunk that contains it.

A frame's index is its position in the decoder's output (presentation order), counted
from the first decoded frame: source timestamps, start times and B-frame reordering do
not enter into it. Each clip is H.264 at constant frame rate, pts = 0, 1, 2, ... in units
of 1/fps, a keyframe exactly every `gop` frames (first frame included), no B-frames, and
its `moov` atom first, so a reader can seek to frame f by decoding from `f - f % gop`.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from fractions import Fraction

import av
from av.video.frame import PictureType

from .errors import SourceError

CODEC = "libx264"
PIX_FMT = "yuv420p"


@dataclasses.dataclass(frozen=True, kw_only=True)
class EncodeSettings:
    """Everything that decides a clip's bytes (with the libx264/FFmpeg versions)."""

    crf: int = 18  # near-transparent for training data; the barcodes survive far lower quality
    preset: str = "fast"
    gop: int = 16  # keyframe interval: the most frames a reader decodes to reach any frame
    resize: tuple[int, int] | None = None  # (width, height) of every clip; None keeps the source size

    def codec_options(self) -> dict[str, str]:
        # sc_threshold 0: keyframes only every `gop` frames, never at scene cuts, so the
        # keyframe before frame f is f - f % gop without an index.
        # bf 0: pts == decode order == frame index; decode stops right after the last frame.
        # threads 1: libx264's output depends on its thread count; fixing it keeps shards
        # byte-identical across machines with different core counts (parallelism comes
        # from running several videos at once).
        return {
            "crf": str(self.crf),
            "preset": self.preset,
            "g": str(self.gop),
            "keyint_min": str(self.gop),
            "sc_threshold": "0",
            "bf": "0",
            "threads": "1",
        }

    def describe(self) -> dict:
        return {
            "codec": "h264",
            "encoder": CODEC,
            "pix_fmt": PIX_FMT,
            "crf": self.crf,
            "preset": self.preset,
            "gop": self.gop,
            "bframes": 0,
            "resize": list(self.resize) if self.resize else None,
            "libavcodec": ".".join(map(str, av.library_versions["libavcodec"])),
            "pyav": av.__version__,
        }


def output_size(settings: EncodeSettings, width: int, height: int) -> tuple[int, int]:
    w, h = settings.resize or (width, height)
    if w % 2 or h % 2:
        raise ValueError(f"yuv420p H.264 needs an even width and height, got {w}x{h}: pass --resize WxH")
    return w, h


class ClipEncoder:
    """One view of one chunk: an H.264 mp4 written to `path`."""

    def __init__(self, path: str, fps: Fraction, size: tuple[int, int], settings: EncodeSettings):
        self.path = path
        self.time_base = 1 / fps
        self.count = 0
        # faststart moves moov to the front (rewrites the file on close: needs a real path);
        # bitexact keeps library version strings out of the bytes.
        self.container = av.open(path, "w", format="mp4", options={"movflags": "+faststart", "fflags": "+bitexact"})
        self.stream = self.container.add_stream(CODEC, rate=fps, options=settings.codec_options())
        self.stream.width, self.stream.height = size
        self.stream.pix_fmt = PIX_FMT
        self.stream.codec_context.flags |= av.codec.context.Flags.bitexact

    def write(self, frame: av.VideoFrame) -> None:
        frame.pts = self.count
        frame.time_base = self.time_base
        # The decoder marks the source's own I-frames; libx264 would obey them and break
        # the fixed GOP. NONE lets the encoder place keyframes by `gop` alone.
        frame.pict_type = PictureType.NONE
        self.container.mux(self.stream.encode(frame))
        self.count += 1

    def close(self) -> int:
        self.container.mux(self.stream.encode(None))
        self.container.close()
        return self.count

    def abort(self) -> None:
        try:
            self.container.close()
        except av.FFmpegError:
            pass
        if os.path.exists(self.path):
            os.remove(self.path)


def decode_frames(video_id: str, path: str, size: tuple[int, int], resize: bool) -> Iterator[av.VideoFrame]:
    """Every frame of the file's first video stream, converted to yuv420p at `size`."""
    width, height = size
    interpolation = "AREA" if resize else None  # area averaging: the right filter for downscaling
    count = 0
    try:
        with av.open(path) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            for frame in container.decode(stream):
                yield frame.reformat(width=width, height=height, format=PIX_FMT, interpolation=interpolation)
                count += 1
    except av.FFmpegError as exc:
        raise SourceError(video_id, path, f"corrupt video: decoding failed after frame {count} ({exc})") from None


def encode_chunks(
    video_id: str,
    paths: tuple[str, ...],
    num_frames: int,
    fps: Fraction,
    sizes: list[tuple[int, int]],
    resize: bool,
    chunks: list[tuple[int, int]],
    clip_paths: list[list[str]],
    settings: EncodeSettings,
    strict_length: bool = True,
) -> None:
    """Encode clip_paths[c][v] = frames chunks[c] of view v (at sizes[v]), decoding each view once.

    Frames are read from all views in lockstep, so at most the chunks overlapping the
    current frame have encoders open: memory does not grow with the video's length.
    `strict_length` False accepts views longer than num_frames (--truncate-views).
    """
    decoders = [decode_frames(video_id, p, size, resize) for p, size in zip(paths, sizes)]
    open_clips: dict[int, list[ClipEncoder]] = {}
    next_chunk = 0
    try:
        for f in range(num_frames):
            frames = []
            for path, dec in zip(paths, decoders):
                frame = next(dec, None)
                if frame is None:
                    raise SourceError(video_id, path, f"decoded only {f} frames, but demuxing counted {num_frames}")
                frames.append(frame)
            while next_chunk < len(chunks) and chunks[next_chunk][0] == f:
                open_clips[next_chunk] = [
                    ClipEncoder(p, fps, size, settings) for p, size in zip(clip_paths[next_chunk], sizes)
                ]
                next_chunk += 1
            for c, encoders in list(open_clips.items()):
                for enc, frame in zip(encoders, frames):
                    enc.write(frame)
                if chunks[c][1] == f + 1:
                    for enc in open_clips.pop(c):
                        enc.close()
        if strict_length:
            for path, dec in zip(paths, decoders):
                if next(dec, None) is not None:
                    raise SourceError(video_id, path, f"decodes to more frames than the {num_frames} demuxing counted")
    except BaseException:
        for encoders in open_clips.values():
            for enc in encoders:
                enc.abort()
        raise
    finally:
        for dec in decoders:
            dec.close()
