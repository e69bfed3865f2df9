"""One view file as a player sees it: which stream plays, at what rate, stored how.

    played_stream  the video stream the FFmpeg CLI picks with no `-map` (covers never)
    view_rate      the rate the stream declares; raw elementary streams: their codec's
    camera_rate    rates equal within RATE_TOLERANCE are one rate (Matroska's 19001/317 is 59.94)
    probe_view     frame count (demuxing), rate, the first frame's size, orientation, colour, and
                   where the view can be entered mid-file (entry_points: keyframes and their frame index)

Probing and decoding (encode.decode_frames) both call played_stream, so the stream counted
is the stream encoded.
"""

from __future__ import annotations

import dataclasses
import math
from fractions import Fraction
from typing import Any

import av
import numpy as np

from .display import Colour, Matrix, display_rotation, mirrored
from .errors import SourceError

# Matroska stores durations in whole nanoseconds, so FFmpeg reads 60000/1001 there as
# 19001/317 (5e-8 apart) and 120000/1001 as 29011/242; 29.97 and 30 are 1e-3 apart.
RATE_TOLERANCE = Fraction(1, 10_000)
AVFMT_NOTIMESTAMPS = 0x80  # a raw elementary stream (.h264, .hevc, .m2v): no container timestamps


def untimed(container) -> bool:
    """A raw elementary stream or an image sequence (FFmpeg reads raw MJPEG as `jpeg_pipe`):
    its demuxer invents 25 fps, the `-framerate` default of the raw and image demuxers."""
    name = container.format.name
    return bool(container.format.flags & AVFMT_NOTIMESTAMPS) or name in ("image2", "image2pipe") or name.endswith("_pipe")
FIELD_ORDERS = {0: "unknown", 1: "progressive", 2: "tt", 3: "bb", 4: "tb", 5: "bt"}  # AVFieldOrder, as ffprobe names them


def played_stream(container: av.container.InputContainer) -> av.video.stream.VideoStream | None:
    """The video stream `ffmpeg -i FILE` maps with no -map (fftools map_auto_video): the
    largest picture, a stream flagged default counting 5,000,000 pixels more, the first of
    equals; a stream flagged attached_pic (a cover, a thumbnail) never. None: no such stream."""
    best, best_score = None, -1
    for stream in container.streams.video:
        if stream.disposition & av.stream.Disposition.attached_pic:
            continue
        context = stream.codec_context
        score = context.width * context.height + 5_000_000 * bool(stream.disposition & av.stream.Disposition.default)
        if score > best_score:
            best, best_score = stream, score
    return best


def camera_rate(rate: Fraction) -> Fraction:
    """`rate`, or the standard rate (whole, or NTSC's n*1000/1001) it is within RATE_TOLERANCE of."""
    for standard in (Fraction(round(rate)), Fraction(round(rate * Fraction(1001, 1000)) * 1000, 1001)):
        if standard > 0 and abs(rate - standard) <= standard * RATE_TOLERANCE:
            return standard
    return rate


def same_rate(a: Fraction, b: Fraction) -> bool:
    return abs(a - b) <= min(a, b) * RATE_TOLERANCE


@dataclasses.dataclass(frozen=True, kw_only=True)
class ViewSource:
    """How one view's file is stored and how it is meant to be shown."""

    codec: str
    pix_fmt: str  # of the decoded frames
    bit_depth: int  # bits per component of the decoded frames
    width: int  # as stored (before the display matrix)
    height: int
    matrix: Matrix | None  # the display matrix, None where the file has none
    colour: Colour  # as the decoder reports it for the first frame
    yuv: bool
    sar: Fraction = Fraction(1)  # sample (pixel) aspect ratio; 1 where the file says nothing
    field_order: str = "progressive"  # FIELD_ORDERS' name: progressive, tt, bb, tb, bt or unknown
    stream: int = 0  # index of the played stream in the file
    covers: int = 0  # other video streams in the file (attached pictures, thumbnails), never read

    def describe(self) -> dict[str, Any]:
        rotation = display_rotation(self.matrix)
        return {
            "codec": self.codec,
            "pix_fmt": self.pix_fmt,
            "width": self.width,
            "height": self.height,
            # counter-clockwise, in [0, 360): ffprobe prints 270 as -90
            "rotation": 0 if math.isnan(rotation) else round(rotation) % 360,
            "mirrored": mirrored(self.matrix),
            "colour": self.colour.describe(),
            "sample_aspect_ratio": f"{self.sar.numerator}:{self.sar.denominator}",
            "field_order": self.field_order,
            "stream": self.stream,
        }


# An intra-only stream (MJPEG, ProRes, FFV1) has a keyframe on every frame: one entry per
# ENTRY_GAP frames keeps the probe's result small (a 100k-frame view: 12.5k entries), at the
# cost of at most that many frames decoded in vain. A task gets only its run's (Entries.around).
ENTRY_GAP = 8
# Seeks tried, each to an earlier entry, where one lands past the frame wanted (MPEG-TS seeks
# by bisection; a decoder may restart only at the keyframe after an open GOP's).
SEEK_TRIES = 4


@dataclasses.dataclass(frozen=True, kw_only=True)
class Entries:
    """Where a view can be entered without decoding it from the start: keyframes, each with the
    frame index it decodes to (the rank of its timestamp among the counted packets' timestamps)
    and its timestamp (stream time base), sorted. Frame 0 is always entered from the file's start.
    `why_not`: why the view has none (a raw stream: no timestamps to seek to or check)."""

    points: tuple[tuple[int, int], ...] = ()  # (frame index, pts)
    why_not: str | None = None

    def around(self, start: int, stop: int) -> Entries:
        """The entries a decode of frames [start, stop) uses: the last SEEK_TRIES at or before
        `start` (where it may seek) up to the first at or after `stop` (where the count is checked)."""
        first = next((i for i, p in enumerate(self.points) if p[0] > start), len(self.points))
        last = next((i for i, p in enumerate(self.points) if p[0] >= stop), len(self.points) - 1)
        return Entries(points=self.points[max(0, first - SEEK_TRIES):last + 1], why_not=self.why_not)

    def before(self, frame: int) -> list[tuple[int, int]]:
        """The entries to seek to for `frame`, the nearest first: the last SEEK_TRIES at or
        before it. None of them: decode from the start."""
        return [p for p in self.points if p[0] <= frame][-SEEK_TRIES:][::-1]


REORDER_WINDOW = 16  # packets after a keyframe (in decode order) that may be shown before it: an open GOP's leading frames


def entry_points(packets: list[tuple[int | None, bool]], untimed_stream: bool = False, gap: int = ENTRY_GAP) -> Entries:
    """Entries of a view from its counted packets, (pts, keyframe) in decode order (pure).

    A keyframe's frame index is the number of frames the decoder outputs before it. Where
    every packet decoded before it is shown before it, every packet decoded after it is shown
    after those, and past REORDER_WINDOW packets after it too, that is its timestamp's rank
    among all timestamps. A keyframe that is not such a clean cut (timestamps that jump back: MPEG-TS
    files joined with `cat`) is no entry. Needs every timestamp, each once; a stream that
    lacks them can only be decoded from the start."""
    if untimed_stream:
        return Entries(why_not="a raw stream has no timestamps to seek to")
    stamps = [pts for pts, _ in packets]
    if any(pts is None for pts in stamps):
        return Entries(why_not="some packets have no timestamp")
    rank = {pts: i for i, pts in enumerate(sorted(stamps))}
    if len(rank) != len(stamps):
        return Entries(why_not="two packets have the same timestamp")
    # later[i]: the least timestamp decoded after packet i; far[i]: after packet i + REORDER_WINDOW
    later: list[int | None] = [None] * len(stamps)
    far: list[int | None] = [None] * len(stamps)
    for i in range(len(stamps) - 2, -1, -1):
        later[i] = stamps[i + 1] if later[i + 1] is None else min(stamps[i + 1], later[i + 1])
        j = i + REORDER_WINDOW + 1
        if j < len(stamps):
            far[i] = stamps[j] if far[i + 1] is None else min(stamps[j], far[i + 1])
    cuts, most = [], None  # keyframes that cut the stream cleanly, in decode order
    for i, (pts, key) in enumerate(packets):
        # Shown after everything decoded before it; everything decoded after it shown after
        # that, and after it too past the few leading frames of an open GOP.
        clean = (most is None or (most < pts and (later[i] is None or later[i] > most))) and (far[i] is None or far[i] > pts)
        if key and clean:
            cuts.append((rank[pts], pts))
        most = pts if most is None else max(most, pts)
    points, last = [], 0
    for frame, pts in sorted(cuts):
        if frame >= last + gap:
            points.append((frame, pts))
            last = frame
    return Entries(points=tuple(points))


@dataclasses.dataclass(frozen=True, kw_only=True)
class ViewProbe:
    path: str
    num_frames: int  # frames the decoder outputs (probe_view: not the packets it discards or cannot decode)
    fps: Fraction
    source: ViewSource
    entries: Entries = Entries()


def _frame_source(stream, frame, covers: int) -> ViewSource:
    desc = frame.format
    matrix = frame.side_data.get("DISPLAYMATRIX")
    context = stream.codec_context
    sar = context.sample_aspect_ratio or stream.sample_aspect_ratio
    return ViewSource(
        codec=context.name,
        pix_fmt=desc.name,
        bit_depth=max(c.bits for c in desc.components),
        width=frame.width,
        height=frame.height,
        matrix=tuple(int(v) for v in np.frombuffer(bytes(matrix), "<i4")) if matrix is not None else None,
        colour=Colour(range=frame.color_range, matrix=frame.colorspace, primaries=frame.color_primaries,
                      transfer=frame.color_trc),
        yuv=not desc.is_rgb and len(desc.components) >= 3,
        sar=Fraction(sar) if sar else Fraction(1),
        field_order=_field_order(context.field_order, frame.interlaced_frame),
        stream=stream.index,
        covers=covers,
    )


def _field_order(code: int, interlaced: bool) -> str:
    if code in (2, 3, 4, 5):
        return FIELD_ORDERS[code]
    return "unknown" if interlaced else "progressive"  # interlaced frames in a stream that does not say which field is first


def view_rate(video_id: str, path: str, container, stream) -> Fraction:
    """The frame rate the stream declares. A raw elementary stream has no container
    timestamps: its demuxer invents 25 fps, so the rate is the codec's own (H.264/HEVC VUI
    timing, MPEG-2 sequence header), read after the first frame decoded; one that declares
    none is refused rather than guessed. Rates within RATE_TOLERANCE of a standard rate are it."""
    if untimed(container):
        rate = stream.codec_context.framerate
        if not rate:
            raise SourceError(video_id, path, f"a raw {stream.codec_context.name} stream with no container "
                                              "timestamps that declares no frame rate: put it in a container (mp4, mkv) "
                                              "with its rate, e.g. ffmpeg -r RATE -i FILE -c copy FILE.mp4")
    else:
        rate = stream.average_rate or stream.guessed_rate
        if not rate:
            raise SourceError(video_id, path, "the video stream has no frame rate")
    return camera_rate(Fraction(rate))


def probe_view(video_id: str, path: str) -> ViewProbe:
    """Open one view file, count its played stream's frames by demuxing, and decode its first
    frame (for its display matrix, colour, aspect ratio and field order).

    A frame counts when the decoder outputs it: a packet the demuxer flags to discard (the
    part of an MP4/MOV edit list before its start or after its end) does not, and neither
    does a leading packet the decoder drops without a flag: a recording cut in mid-GOP (a
    split MPEG-TS segment, a capture joined mid-stream) starts with frames that refer to
    frames before the cut, which decoders do not output. Those are the packets fed before
    the first frame came out whose timestamp is earlier than that frame's: decoders output
    in presentation order. The encode pass checks the count again while decoding.

    The same pass records where the view can be entered mid-file (entry_points), so an
    encode task that starts inside the video seeks instead of decoding from frame 0.
    """
    first = None
    leading: list[tuple[int | None, bool]] = []  # (pts, keyframe) of the counted packets fed until the first frame came out
    counted: list[tuple[int | None, bool]] = []  # of the counted packets after those
    try:
        with av.open(path) as container:
            stream = played_stream(container)
            if stream is None:
                covers = len(container.streams.video)
                raise SourceError(video_id, path, "no video stream in the file" if not covers else
                                  f"no video stream in the file, only {covers} attached picture(s) (covers)")
            for packet in container.demux(stream):
                if not packet.size:
                    continue
                if first is None:
                    if not packet.is_discard:
                        leading.append((packet.pts, packet.is_keyframe))
                    first = next(iter(packet.decode()), None)
                elif not packet.is_discard:
                    counted.append((packet.pts, packet.is_keyframe))
            if first is None and leading:
                first = next(iter(stream.codec_context.decode(None)), None)  # a decoder that delays its output
            if first is not None:
                fps = view_rate(video_id, path, container, stream)
                source = _frame_source(stream, first, len(container.streams.video) - 1)
                raw = untimed(container)
    except av.FFmpegError as exc:
        raise SourceError(video_id, path, f"unreadable or corrupt video ({exc})") from None
    except OSError as exc:  # a symlink loop, EIO, a file that vanished: named, never a traceback
        raise SourceError(video_id, path, f"cannot read the file ({exc.strerror or exc})") from None
    if first is not None and first.pts is not None:
        leading = [(pts, key) for pts, key in leading if pts is None or pts >= first.pts]
    counted = leading + counted
    count = len(counted)
    if count == 0:
        raise SourceError(video_id, path, "zero-frame video")
    if first is None:
        raise SourceError(video_id, path, "no frame decodes from the video stream")
    return ViewProbe(path=path, num_frames=count, fps=fps, source=source, entries=entry_points(counted, raw))
