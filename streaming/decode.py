"""Decoding only the frames an item needs from one in-memory clip, with PyAV.

Clips are written with a keyframe every `gop` frames and pts = index / fps (docs/format.md),
so the keyframe before frame f is f - f % gop: the decoder seeks there whenever that skips
frames, decodes forward, converts only the wanted frames to RGB (resizing in the same
swscale call, with the clip's colour matrix and range) and stops after the last one. No
float copy, no full-resolution copy when resizing, no frames beyond the last wanted one.

Nothing meta.json says about a clip is believed where the clip can be asked (`Claims`):
its header must declare the same codec, frame count, size and frame rate before a frame
is decoded, and every decoded frame must be the one expected: its pts on the frame grid,
one after the previous frame, a keyframe exactly where the gop puts one (so every seek
lands where the decoder expects), the declared size and pixel format before it is converted. The decoder itself refuses a frame of more pixels
than the declared size could need (FFmpeg's `max_pixels`), so a stream that switches to
16000x16000 mid-way never allocates it. Any disagreement is a `ClipMismatch`.
"""

from __future__ import annotations

import collections
import dataclasses
import io
import os
import sys
from fractions import Fraction

import av
import numpy as np
from av.video.reformatter import ColorRange, Colorspace, Interpolation, VideoReformatter


# Reformatters made by a parent process and let go in a forked child (a DataLoader worker,
# or the garbage collector there): never freed in the child, see ClipDecoder.__del__.
_INHERITED: list[VideoReformatter] = []

_GBRP_TO_RGB = (1, 2, 0)  # gbrp planes are G, B, R: their channel in RGB order

# A clip's colour matrix (FFmpeg's AVCOL_SPC_* code, as the stream declares it) -> the
# swscale matrix that converts it to RGB. A clip that declares none is BT.601, as the FFmpeg
# CLI reads it; vidshard's writer tags every clip (docs/format.md).
_SWS_MATRIX = {
    1: Colorspace.ITU709,  # bt709
    4: Colorspace.FCC,  # fcc
    5: Colorspace.ITU601,  # bt470bg
    6: Colorspace.SMPTE170M,  # smpte170m (= BT.601)
    7: Colorspace.SMPTE240M,  # smpte240m
    9: Colorspace.BT2020,  # bt2020nc
    10: Colorspace.BT2020,  # bt2020c (swscale has the non-constant-luminance matrix only)
}
_RANGE_PC = 2  # AVCOL_RANGE_JPEG: full range; anything else is limited (tv) range


def rgb_conversion(colorspace: int, color_range: int) -> dict:
    """reformat() arguments that convert a YUV clip with this matrix and range to full-range RGB."""
    return {
        "src_colorspace": _SWS_MATRIX.get(colorspace, Colorspace.ITU601),
        "src_color_range": ColorRange.JPEG if color_range == _RANGE_PC else ColorRange.MPEG,
        "dst_color_range": ColorRange.JPEG,
    }


CLIP_CODEC = "h264"  # what the writer encodes (docs/format.md): anything else is not a vidshard clip
# 4:2:0, 8 bits; FFmpeg's H.264 decoder names a full-range clip's format yuvj420p
CLIP_PIX_FMTS = ("yuv420p", "yuvj420p")
# The samples as stored, in order: an edit list can play stored frames twice or skip some
# while every pts, count and keyframe still looks right (a hostile clip whose two edits play
# frames 0-7 twice delivered them as frames 8-15). The writer's clips carry none but an
# identity edit, so nothing valid changes.
_DEMUX = {"ignore_editlist": "1"}


class ClipMismatch(ValueError):
    """A clip whose header or decoded frames disagree with what meta.json says of it."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Claims:
    """What meta.json (and index.json) say of one view's clip: each is checked against the clip."""

    frames: int  # frames in the clip (end_frame - start_frame)
    height: int  # stored size (view_sizes)
    width: int
    fps: Fraction  # fps_rational: the clip's frame rate, pts = index / fps
    gop: int  # a keyframe exactly every gop frames, the first included


def _max_pixels(claims: Claims) -> int:
    """FFmpeg's max_pixels for this clip: its frames' pixels with the decoder's padding
    (linesizes aligned to 64 bytes, heights to macroblock pairs), nothing like a frame of
    another size. Measured: a 48x32 clip needs 2048."""
    return (claims.width + 128) * (claims.height + 64)


def entry_point(target: int, next_frame: int | None, gop: int) -> int | None:
    """Where the decoder enters the clip to reach frame `target` when it would produce
    `next_frame` next (None: nothing decoded yet): the keyframe before target, when decoding
    on from next_frame would pass over it; None to decode on."""
    keyframe = target - target % gop
    return keyframe if next_frame is None or keyframe > next_frame else None


def frames_decoded(wanted, gop: int) -> int:
    """Frames `ClipDecoder.decode` decodes to deliver the sorted frame indices `wanted` of a
    clip with a keyframe every `gop` frames (its cost: docs/performance.md, `vidshard inspect`)."""
    decoded, next_frame = 0, None
    for target in wanted:
        start = entry_point(target, next_frame, gop)
        start = next_frame if start is None else start
        decoded += target - start + 1
        next_frame = target + 1
    return decoded


def _sample_positions(data: bytes, options: dict) -> list[int]:
    """Byte positions of the video packets the demuxer gives, in order (no decoding)."""
    with av.open(io.BytesIO(data), "r", format="mp4", options=options) as container:
        return [p.pos for p in container.demux(container.streams.video[0]) if p.size]


class ClipDecoder:
    """Decodes sorted frame indices of a clip into a preallocated [N, 3, H, W] uint8 array."""

    def __init__(self, threads: int = 1, stats: collections.Counter | None = None, shared: bool = False):
        self.threads = threads  # FFmpeg's decoder threads and swscale's slice threads (reformat's default is one per CPU)
        self.shared = shared  # items are made in shared memory (a DataLoader worker's: streaming.items._item_buffer)
        # frames_decoded / frames_delivered (each view's frames decoded, and converted for an item): the dataset's stats
        self.stats = stats if stats is not None else collections.Counter()
        self.pid = os.getpid()
        self.reformatter = VideoReformatter()  # keeps its swscale context between frames
        self._spares: list[np.ndarray] = []  # (buffer)
        self._planar_ok: dict[tuple, bool] = {}  # (width, height, colour) -> gbrp proven right here

    def __del__(self, _getpid=os.getpid, _kept=_INHERITED) -> None:  # (bound now: module globals may be gone at exit)
        # A swscale context with slice threads (threads > 1) owns a thread pool of the process
        # that made it: freeing it in a forked child waits forever on threads the child does
        # not have (a DataLoader worker collecting its parent's garbage hung that way).
        if getattr(self, "pid", None) not in (None, _getpid()):
            _kept.append(self.reformatter)

    def buffer(self, shape: tuple[int, ...]) -> np.ndarray:
        """An uninitialised uint8 array for the next item's frames.

        One of two spare arrays is handed out again once nothing but this decoder refers to
        it (the consumer dropped the item, or collate copied it): a fresh multi-hundred-MB
        array costs a page fault per 4 KiB on first touch, up to a second per 1000-frame
        224x224 3-view item on this machine. Two, because `for item in ds:` still holds the
        previous item while the next one is made.
        """
        for spare in self._spares:
            if spare.shape == shape and sys.getrefcount(spare) <= 3:  # the list's, the loop's, the call's
                return spare
        fresh = np.empty(shape, dtype=np.uint8)
        self._spares = [fresh, *self._spares[:1]]  # the newest two: a third held item is the consumer's, not reused
        return fresh

    def decode(self, data: bytes, wanted: np.ndarray, claims: Claims, size: tuple[int, int] | None, out: np.ndarray) -> None:
        """Fill out[i] with frame wanted[i] (strictly increasing) as RGB, resized to size=(H, W).

        ClipMismatch when the clip disagrees with `claims`; EOFError when it ends early.
        """
        with av.open(io.BytesIO(data), "r", format="mp4", options=_DEMUX) as container:
            stream, ticks, pix_fmt = self._checked_stream(container, claims)
            height, width = size if size else (claims.height, claims.width)
            interpolation = Interpolation.AREA if size else None
            # The clip's own matrix and range (meta.json's view_colour says the same), not
            # swscale's guess; without this a full-range or BT.709 clip comes out shifted.
            colour = rgb_conversion(stream.codec_context.colorspace, stream.codec_context.color_range)
            next_frame, frames = None, None  # index the decoder will produce next
            for i, target in enumerate(wanted.tolist()):
                keyframe = entry_point(target, next_frame, claims.gop)
                if keyframe is not None:
                    container.seek(round(keyframe * ticks), stream=stream, backward=True)
                    frames, next_frame = container.decode(stream), keyframe
                    entered = True  # the next frame must be that keyframe
                while True:
                    frame = next(frames, None)
                    if frame is None:
                        raise EOFError(f"clip ends before frame {target}")
                    self._check_frame(frame, next_frame, ticks, claims, stream, pix_fmt, after_seek=entered)
                    self.stats["frames_decoded"] += 1
                    entered = False
                    next_frame += 1
                    if next_frame > target:
                        break
                planar = size is not None and size != (frame.height, frame.width)
                if not planar:
                    planar = self._unscaled_planar_ok(width, height, interpolation, colour)
                self._convert(frame, width, height, interpolation, colour, planar, out[i])
                self.stats["frames_delivered"] += 1

    def check_header(self, data: bytes, claims: Claims) -> None:
        """ClipMismatch unless the clip's header says what `claims` say (nothing decoded)."""
        with av.open(io.BytesIO(data), "r", format="mp4", options=_DEMUX) as container:
            self._checked_stream(container, claims)

    def check(self, data: bytes, claims: Claims) -> int:
        """Decode every frame of the clip, checking each as `decode` does (`vidshard verify
        --decode`); the frames decoded. Also what a player would show: the clip's edit list
        must play its stored samples once each, in order (the reader reads them as stored)."""
        with av.open(io.BytesIO(data), "r", format="mp4", options=_DEMUX) as container:
            stream, ticks, pix_fmt = self._checked_stream(container, claims)
            played, stored = _sample_positions(data, {}), _sample_positions(data, _DEMUX)
            if played != stored:
                raise ClipMismatch(f"the clip's edit list plays {len(played)} samples other than the {len(stored)} it stores, "
                                   "once each in order: a player shows other frames than the reader delivers")
            count = 0
            for frame in container.decode(stream):
                if count >= claims.frames:
                    raise ClipMismatch(f"clip decodes to more than the {claims.frames} frames meta.json says")
                self._check_frame(frame, count, ticks, claims, stream, pix_fmt)
                count += 1
            if count != claims.frames:
                raise ClipMismatch(f"clip decodes to {count} frames, meta.json says {claims.frames}")
            return count

    def _checked_stream(self, container, claims: Claims):
        """(the clip's video stream, pts ticks per frame, its pixel format), after its header agreed
        with `claims`. The format is kept: the decoder's own field follows the frames it decodes."""
        streams = container.streams
        if len(streams) != 1 or not streams.video:
            raise ClipMismatch(f"a clip holds exactly one video stream; this one holds "
                               f"{', '.join(s.type for s in streams) or 'none'}")
        stream = streams.video[0]
        context = stream.codec_context
        declared = (context.name, stream.frames, context.height, context.width, stream.average_rate)
        said = (CLIP_CODEC, claims.frames, claims.height, claims.width, claims.fps)
        if declared != said or context.pix_fmt not in CLIP_PIX_FMTS:
            if context.pix_fmt not in CLIP_PIX_FMTS:
                declared, said = (*declared, context.pix_fmt), (*said, " or ".join(CLIP_PIX_FMTS))
            names = ("codec", "frames", "height", "width", "frame rate", "pixel format")
            diff = ", ".join(f"{n} {d} (meta.json: {w})" for n, d, w in zip(names, declared, said) if d != w)
            raise ClipMismatch(f"clip header disagrees with meta.json: {diff}")
        if stream.time_base is None or stream.start_time not in (0, None):
            raise ClipMismatch(f"clip starts at pts {stream.start_time} (time base {stream.time_base}), not 0")
        ticks = 1 / (claims.fps * stream.time_base)  # pts step between frames
        if ticks < 1:
            raise ClipMismatch(f"clip time base {stream.time_base} is coarser than its frame rate {claims.fps}")
        context.thread_count = self.threads
        # Checked by FFmpeg before it allocates a frame: the per-frame check below comes after.
        context.options = {"max_pixels": str(_max_pixels(claims))}
        return stream, ticks, context.pix_fmt

    @staticmethod
    def _check_frame(frame, index: int, ticks: Fraction, claims: Claims, stream, pix_fmt: str, after_seek: bool = False) -> None:
        """The decoded frame must be frame `index`: its pts, size and format, and a keyframe
        exactly where meta.json's gop puts one (so a seek lands where the decoder expects)."""
        expected = round(index * ticks)
        if frame.pts != expected:
            if after_seek:
                raise ClipMismatch(f"a seek to frame {index} (a keyframe by meta.json's gop {claims.gop}) delivered pts "
                                   f"{frame.pts}, not {expected}: the clip's keyframes are not where meta.json's gop "
                                   f"{claims.gop} puts them")
            raise ClipMismatch(f"decoded frame has pts {frame.pts}, frame {index} of a {claims.fps} fps clip has {expected} "
                               f"(time base {stream.time_base}): frames missing, repeated or at another rate than meta.json says")
        if (frame.height, frame.width, frame.format.name) != (claims.height, claims.width, pix_fmt):
            raise ClipMismatch(f"frame {index} decodes to {frame.width}x{frame.height} {frame.format.name}; the clip declares "
                               f"{claims.width}x{claims.height} {pix_fmt}")
        if bool(frame.key_frame) != (index % claims.gop == 0):
            raise ClipMismatch(f"frame {index} is {'a' if frame.key_frame else 'not a'} keyframe: the clip's keyframes are not "
                               f"where meta.json's gop {claims.gop} puts them (every {claims.gop} frames from frame 0)")

    def _convert(self, frame, width, height, interpolation, colour: dict, planar: bool, out: np.ndarray) -> None:
        if planar:
            # Planar RGB straight from swscale, copied row-contiguously into [3, H, W]:
            # packed rgb24 + a HWC->CHW transpose was 3.7x slower (docs/performance.md).
            planes = self.reformatter.reformat(frame, format="gbrp", width=width, height=height,
                                               interpolation=interpolation, threads=self.threads, **colour).planes
            for channel, plane in zip(_GBRP_TO_RGB, planes):
                out[channel] = np.frombuffer(plane, np.uint8).reshape(height, plane.line_size)[:, :width]
        else:
            plane = self.reformatter.reformat(frame, format="rgb24", width=width, height=height,
                                              interpolation=interpolation, threads=self.threads, **colour).planes[0]
            packed = np.frombuffer(plane, np.uint8).reshape(height, plane.line_size)[:, : 3 * width]
            np.copyto(out, packed.reshape(height, width, 3).transpose(2, 0, 1))

    def _unscaled_planar_ok(self, width: int, height: int, interpolation, colour: dict) -> bool:
        """Whether swscale's unscaled yuv420p -> gbrp conversion is right at this size here.

        PyAV 18.1's FFmpeg (libswscale 9.5) leaves the last `width % 16` columns unwritten
        for `width % 16` in 2..8 (88 px wide: columns 80-87 hold garbage), while its rgb24
        conversion, bit-identical elsewhere, is right. The SIMD width differs between CPUs,
        so a noise frame is converted both ways once per size and the planar path is kept
        only where the two agree exactly.
        """
        key = (width, height, interpolation, tuple(sorted((k, int(v)) for k, v in colour.items())))
        if key not in self._planar_ok:
            noise = np.random.default_rng([width, height]).integers(0, 256, (height * 3 // 2, width), dtype=np.uint8)
            test = av.VideoFrame.from_ndarray(noise, format="yuv420p")
            planar, packed = np.empty((3, height, width), np.uint8), np.empty((3, height, width), np.uint8)
            check = VideoReformatter()
            for flag, dst in ((True, planar), (False, packed)):
                saved, self.reformatter = self.reformatter, check
                try:
                    self._convert(test, width, height, interpolation, colour, flag, dst)
                finally:
                    self.reformatter = saved
            self._planar_ok[key] = bool(np.array_equal(planar, packed))
        return self._planar_ok[key]

