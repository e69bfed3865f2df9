"""Frame-exact clip encoding with PyAV: decode the source views in lockstep, once, and feed
each frame to the encoders of every chunk that contains it.

A frame's index is its position in the decoder's output (presentation order), counted
from the first decoded frame: source timestamps, start times and B-frame reordering do
not enter into it. Each clip is H.264 at constant frame rate, pts = 0, 1, 2, ... in units
of 1/fps, a keyframe exactly every `gop` frames (first frame included), no B-frames, and
its `moov` atom first, so a reader can seek to frame f by decoding from `f - f % gop`.
"""

from __future__ import annotations

import ctypes
import dataclasses
import functools
import itertools
import os
from collections.abc import Callable, Iterator
from fractions import Fraction

import av
from av.video.frame import PictureType

from .display import Colour, Filters, Matrix, clip_colour, orientation_filters, transposed
from .errors import SourceError
from .media import Entries, ViewSource, played_stream

CODEC = "libx264"
PIX_FMT = "yuv420p"
SWS_CS_ITU601 = 5  # swscale's name for the BT.601 matrix (PyAV's reformat takes swscale's codes)


X264_CPU_AVX512 = 1 << 16  # x264.h


@functools.cache
def x264_cpu_flags() -> int | None:
    """What libx264 detects on this CPU (x264_cpu_detect, asked of the libx264 or libavcodec this
    process has loaded), or None where it cannot be asked (no /proc/self/maps, no such symbol)."""
    try:
        with open("/proc/self/maps") as f:
            paths = {parts[5].strip() for parts in (line.split(None, 5) for line in f) if len(parts) == 6}
    except OSError:
        return None
    # PyAV's own libraries first (its wheel's av.libs/), then any other libx264 this process loaded.
    ours = os.path.dirname(os.path.dirname(av.__file__))
    for path in sorted(paths, key=lambda p: (not p.startswith(ours), "x264" not in os.path.basename(p), p)):
        if not any(name in os.path.basename(path) for name in ("x264", "avcodec")):
            continue
        try:
            detect = ctypes.CDLL(path).x264_cpu_detect
        except (OSError, AttributeError):
            continue
        detect.restype = ctypes.c_uint32
        return detect()
    return None


X264_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow", "placebo")


@dataclasses.dataclass(frozen=True, kw_only=True)
class EncodeSettings:
    """Everything that decides a clip's bytes (with the libx264/FFmpeg versions)."""

    crf: int = 18  # near-transparent for training data; the barcodes survive far lower quality
    preset: str = "fast"
    gop: int = 16  # keyframe interval: the most frames a reader decodes to reach any frame
    resize: tuple[int, int] | None = None  # (width, height) of every clip; None keeps the source size
    autorotate: bool = True  # apply each view's display matrix (False: --no-autorotate)

    def __post_init__(self):
        # Checked here, so a bad setting stops the CLI before OUTPUT is touched.
        if not 0 <= self.crf <= 51:
            raise ValueError(f"--crf must be 0..51 (libx264, 8-bit), got {self.crf}")
        if self.preset not in X264_PRESETS:
            raise ValueError(f"--preset must be one of {', '.join(X264_PRESETS)}, got {self.preset!r}")
        if self.gop < 1:
            raise ValueError(f"--gop must be >= 1 (frames between keyframes), got {self.gop}")
        if self.resize is not None:
            w, h = self.resize
            if w < 2 or h < 2 or w % 2 or h % 2:
                raise ValueError(f"--resize needs an even width and height of at least 2 (yuv420p), got {w}x{h}")

    def codec_options(self) -> dict[str, str]:
        # sc_threshold 0: keyframes only every `gop` frames, never at scene cuts, so the
        # keyframe before frame f is f - f % gop without an index.
        # bf 0: pts == decode order == frame index; decode stops right after the last frame.
        # threads 1: libx264's output depends on its thread count; fixing it keeps shards
        # byte-identical across machines with different core counts (parallelism comes
        # from running several videos at once).
        options = {
            "crf": str(self.crf),
            "preset": self.preset,
            "g": str(self.gop),
            "keyint_min": str(self.gop),
            "sc_threshold": "0",
            "bf": "0",
            "threads": "1",
        }
        # No AVX-512 in libx264 (the rest of what it detects is kept). Its AVX-512
        # mbtree_propagate_list (core 165) works 8 macroblocks at a time without masking the
        # end of a row, so where the width is not a multiple of 8 macroblocks (128 px: 64, 96,
        # 160, 720 px...) the last row reads past its arrays into uninitialised heap memory,
        # and what it finds moves mbtree's costs: the same frames gave different bytes as the
        # heap's leftovers changed (measured: 7 of 300 runs of one 3-view test video, 0 of 600
        # without AVX-512; heap blocks of 0xff vs 0x00 always differ). Without it: the same
        # speed (4-5% faster here), mbtree kept (mbtree=0 fixes it too, at +17-19% bytes), and
        # the bytes an AVX2 machine writes.
        flags = x264_cpu_flags()
        if flags is not None and flags & X264_CPU_AVX512:
            options["x264-params"] = f"asm={flags & ~X264_CPU_AVX512}"
        return options

    def describe(self) -> dict:
        return {
            "codec": "h264",
            "encoder": CODEC,
            "pix_fmt": PIX_FMT,
            "crf": self.crf,
            "preset": self.preset,
            "gop": self.gop,
            "bframes": 0,
            "x264_avx512": False,  # never used: its mbtree code read uninitialised memory (codec_options)
            "resize": list(self.resize) if self.resize else None,
            "autorotate": self.autorotate,
            "libavcodec": ".".join(map(str, av.library_versions["libavcodec"])),
            "pyav": av.__version__,
        }


@dataclasses.dataclass(frozen=True, kw_only=True)
class ViewEncode:
    """How one view's decoded frames become clip frames."""

    path: str  # the source file
    size: tuple[int, int]  # (width, height) of the clips, as displayed unless --no-autorotate
    filters: Filters  # orientation filters, applied after scaling (lossless pixel moves)
    colour: Colour  # the clips' colour tags; the source's range is kept (no requantisation)
    display_matrix: Matrix | None  # written into the clips under --no-autorotate, so players still turn them
    sar: Fraction = Fraction(1)  # the clip's sample aspect ratio: the source's picture shape, at the clip's size
    field_order: str = "progressive"  # "tt" / "bb": the clip is coded interlaced, that field first

    def describe(self) -> dict[str, str]:
        return {"sample_aspect_ratio": f"{self.sar.numerator}:{self.sar.denominator}", "field_order": self.field_order}


def clip_sar(source: ViewSource, turned: bool, stored: tuple[int, int], size: tuple[int, int]) -> Fraction:
    """The sample aspect ratio that shows a clip of `size` as the source displays: the same
    picture shape (display aspect ratio). `stored`: the source's size after orientation."""
    sar = 1 / source.sar if turned else source.sar  # a transposed pixel is as tall as it was wide
    shape = sar * Fraction(stored[0], stored[1])
    return (shape * Fraction(size[1], size[0])).limit_denominator(65535)  # H.264's VUI holds 16 bits each


def view_encode(path: str, source: ViewSource, settings: EncodeSettings) -> ViewEncode:
    """Raises ValueError for a size yuv420p cannot hold or a rotation that is not a multiple of 90."""
    filters = orientation_filters(source.matrix) if settings.autorotate else ()
    width, height = (source.height, source.width) if transposed(filters) else (source.width, source.height)
    w, h = settings.resize or (width, height)
    if w % 2 or h % 2:
        raise ValueError(f"yuv420p H.264 needs an even width and height, got {w}x{h}: pass --resize WxH")
    # Fields stay fields only where rows stay rows: scaling mixes them, a transpose makes them columns.
    keeps_rows = settings.resize is None and not transposed(filters)
    interlaced = {"tt": "tt", "tb": "tt", "bb": "bb", "bt": "bb"}.get(source.field_order) if keeps_rows else None
    return ViewEncode(
        path=path,
        size=(w, h),
        filters=filters,
        colour=clip_colour(source.colour, source.yuv),
        display_matrix=None if settings.autorotate else source.matrix,
        sar=clip_sar(source, transposed(filters), (width, height), (w, h)),
        field_order=interlaced or "progressive",
    )


class ClipEncoder:
    """One view of one chunk: an H.264 mp4 written to `path`."""

    def __init__(
        self, path: str, fps: Fraction, size: tuple[int, int], settings: EncodeSettings, *,
        colour: Colour = Colour(), display_matrix: Matrix | None = None, sar: Fraction = Fraction(1),
        field_order: str = "progressive",
    ):
        self.path = path
        self.time_base = 1 / fps
        self.count = 0
        # faststart moves moov to the front (rewrites the file on close: needs a real path);
        # bitexact keeps library version strings out of the bytes.
        self.container = av.open(path, "w", format="mp4", options={"movflags": "+faststart", "fflags": "+bitexact"})
        options = settings.codec_options()
        if field_order != "progressive":  # coded as fields (MBAFF), the source's first field first
            fields = f"interlaced=1:{'tff' if field_order == 'tt' else 'bff'}=1"
            options["x264-params"] = ":".join(p for p in (options.get("x264-params"), fields) if p)
        self.stream = self.container.add_stream(CODEC, rate=fps, options=options)
        self.stream.width, self.stream.height = size
        if sar != 1:  # the H.264 VUI and the mp4 pasp box; square pixels write neither (the bytes of before)
            self.stream.codec_context.sample_aspect_ratio = sar
        if field_order != "progressive":
            self.stream.codec_context.flags |= av.codec.context.Flags.interlaced_dct | av.codec.context.Flags.interlaced_me
        self.stream.pix_fmt = PIX_FMT
        context = self.stream.codec_context
        context.flags |= av.codec.context.Flags.bitexact
        # The source's colour, tagged in the H.264 VUI and the mp4 colr box: every decoder
        # (the reader, ffprobe, players) converts the clip to RGB as the source was meant.
        context.color_range, context.colorspace = colour.range, colour.matrix
        context.color_primaries, context.color_trc = colour.primaries, colour.transfer
        if display_matrix is not None:
            self.stream.set_display_matrix(list(display_matrix))

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


def _orientation_graph(filters: Filters, frame: av.VideoFrame) -> av.filter.Graph:
    """buffer -> the orientation filters -> buffersink, for frames shaped like `frame`."""
    graph = av.filter.Graph()
    nodes = [
        graph.add(
            "buffer", video_size=f"{frame.width}x{frame.height}", pix_fmt=PIX_FMT, time_base="1/1",
            pixel_aspect="1/1", colorspace=str(frame.colorspace), range=str(frame.color_range),
        )
    ]
    nodes += [graph.add(name, args) for name, args in filters]
    nodes.append(graph.add("buffersink"))
    graph.link_nodes(*nodes).configure()
    return graph


class EntryFailed(Exception):
    """A view entered at a keyframe (media.Entries) counted another frame index at a later
    keyframe than its probe found there. The task then decodes that view from the start
    (task.py), which needs no entry; its log says so."""

    def __init__(self, view: int, why: str):
        super().__init__(why)
        self.view = view


class _Past(Exception):
    """A seek landed past the frame wanted."""


def _indexed(view: ViewEncode, seek: tuple[int, int] | None, start: int,
             checks: dict[int, int]) -> Iterator[tuple[int, av.VideoFrame]]:
    """(frame index, frame) of the view's played stream (media.played_stream: the stream
    probe_view counted), from the file's start, or after seeking to keyframe `seek` (frame
    index, pts) from the first entry (`checks`: pts -> frame index) the decoder outputs:
    where a seek lands, and the frames it outputs before a keyframe, vary by container and codec."""
    with av.open(view.path) as container:
        stream = played_stream(container)
        stream.thread_type = "AUTO"
        frame_index = -1
        if seek is not None:
            try:
                container.seek(seek[1], backward=True, any_frame=False, stream=stream)
            except av.FFmpegError as exc:  # a container that cannot seek: decoded from the start
                raise _Past(f"seeking to frame {seek[0]} (pts {seek[1]}) failed ({exc})") from None
        for frame in container.decode(stream):
            if seek is not None and frame_index < 0:  # not landed yet
                landed = checks.get(frame.pts)
                # Only a frame the decoder restarts at (an IDR, a CRA, a recovery point of count
                # 0: key_frame) counts: an intra-refresh stream flags frames it decodes damaged.
                if landed is None or not frame.key_frame:
                    continue  # before a keyframe: an earlier GOP's tail, an open GOP's leading frames
                if landed > start:
                    raise _Past(f"seeking to frame {seek[0]} (pts {seek[1]}) gave frame {landed} first")
                frame_index = landed - 1
            frame_index += 1
            yield frame_index, frame
        if seek is not None and frame_index < 0:
            raise _Past(f"seeking to frame {seek[0]} (pts {seek[1]}) gave no keyframe")


def decode_frames(video_id: str, view: ViewEncode, resize: bool, start: int = 0, stop: int | None = None,
                  count: int | None = None, entries: Entries = Entries(), index: int = 0,
                  notes: list[str] | None = None) -> Iterator[av.VideoFrame]:
    """Frames [start, stop) of the view as clip frames: yuv420p at view.size, turned upright
    by view.filters, carrying view.colour.

    A frame's index is its position in the decoder's output from the file's start. With
    start > 0 and entries before it (media.Entries), the decoder seeks to the nearest one
    instead (to an earlier one where the seek lands past `start`, or from the start where all
    do: a line in `notes`), and counts from the first keyframe it outputs, whose index the
    probe found; frames before `start` are decoded, not converted. Past `stop` it decodes on
    (not converting) to the next entry or the file's end: every entry passed must have the
    index counted there, timestamps must rise from the entry on, and at the file's end the
    count must be `count` (the probe's). An entered view that disagrees raises EntryFailed
    (`index`: the view's position); one decoded from the start, a SourceError.

    Scaling keeps the source's range and matrix (a 10-bit or 4:2:2 source only loses depth
    or chroma resolution), then the orientation filters move pixels without resampling.
    """
    width, height = view.size
    if transposed(view.filters):
        width, height = height, width  # scale in the stored orientation
    interpolation = "AREA" if resize else None  # area averaging: the right filter for downscaling
    colour = view.colour
    graph = None
    checks = {pts: frame for frame, pts in entries.points}
    tries = entries.before(start) if start else []
    entry, frame_index = None, -1
    try:
        for entry in [*tries, None]:  # None: from the file's start, where no seek landed before `start`
            frames = _indexed(view, entry, start, checks)
            try:
                first = next(frames, None)
                break
            except _Past as past:
                if entry == tries[-1] and notes is not None:
                    notes.append(f"{view.path}: cannot be entered at a keyframe before frame {start} ({past}, "
                                 f"and {len(tries) - 1} earlier seek(s) too); decoded from its start")
        last_pts = None
        for frame_index, frame in itertools.chain([first] if first else [], frames):
            if entry is not None:  # presentation order: a frame shown earlier after the entry is a swapped pair
                if frame.pts is None or (last_pts is not None and frame.pts <= last_pts):
                    raise EntryFailed(index, f"timestamps after frame {frame_index - 1} do not rise (pts {last_pts}, "
                                             f"then {frame.pts})")
                last_pts = frame.pts
            expected = checks.get(frame.pts)
            if expected is not None and expected != frame_index:
                why = f"the keyframe at pts {frame.pts} decodes as frame {frame_index}, its timestamp makes it frame {expected}"
                if entry is not None:
                    raise EntryFailed(index, why)
                raise SourceError(video_id, view.path, f"decoding from the start, {why}: the file's timestamps "
                                                       "disagree with its frame order")
            if frame_index < start:
                continue
            if stop is not None and frame_index >= stop:
                if expected is not None:
                    return  # the count checked at an entry past the range
                continue
            rgb = frame.format.is_rgb
            out = frame.reformat(
                width=width, height=height, format=PIX_FMT, interpolation=interpolation,
                # YUV keeps its range and matrix; RGB is converted with the clip's (BT.601 limited).
                src_color_range=None if rgb else colour.range, dst_color_range=colour.range,
                dst_colorspace=SWS_CS_ITU601 if rgb else None,
            )
            out.color_range, out.colorspace = colour.range, colour.matrix
            out.color_primaries, out.color_trc = colour.primaries, colour.transfer
            if view.filters:
                graph = graph or _orientation_graph(view.filters, out)
                graph.push(out)
                out = graph.pull()
            yield out
    except av.FFmpegError as exc:
        raise SourceError(video_id, view.path, f"corrupt video: decoding failed after frame {frame_index} ({exc})") from None
    except OSError as exc:  # EIO, a file that vanished mid-run: named, never a traceback
        raise SourceError(video_id, view.path, f"cannot read the file after frame {frame_index} ({exc.strerror or exc})") from None
    if entry is not None and ((stop is not None and frame_index + 1 < stop) or (count is not None and frame_index + 1 != count)):
        raise EntryFailed(index, f"the file ends after frame {frame_index}, demuxing counted {count} frames")
    if stop is not None and frame_index + 1 < stop:
        raise SourceError(video_id, view.path, f"the decoder ended after frame {frame_index}, before frame {stop}")
    if count is not None and frame_index + 1 < count:
        raise SourceError(video_id, view.path, f"decoded only {frame_index + 1} frames, but demuxing counted {count}")
    if count is not None and frame_index + 1 > count:
        raise SourceError(video_id, view.path, f"decodes to more frames ({frame_index + 1}) than the {count} demuxing counted")


def encode_chunks(
    video_id: str,
    views: list[ViewEncode],
    fps: Fraction,
    resize: bool,
    chunks: list[tuple[int, int]],
    clip_paths: list[list[str]],
    settings: EncodeSettings,
    view_frames: tuple[int, ...],
    entries: tuple[Entries, ...] = (),
    finished: Callable[[int], None] | None = None,
    notes: list[str] | None = None,
) -> None:
    """Encode clip_paths[c][v] = frames chunks[c] of view v: consecutive chunks of one video
    (a run: task.py), decoding each view once, from its entry before the first chunk.

    Frames are read from all views in lockstep, so at most the chunks overlapping the
    current frame have encoders open: memory does not grow with the video's length.
    `view_frames`: each view's frame count from the probe, checked where its decode ends: the
    file's end, or the first keyframe entry past the run (the index counted there checked).
    `notes`: where a view was decoded from its start although the run starts later.
    `finished(c)` is called as soon as chunk c's clips are complete (the writer spools them
    then, so a worker's disk holds the open chunks' clips, not the whole run's).
    """
    first, last = chunks[0][0], chunks[-1][1]
    entries = entries or tuple(Entries() for _ in views)
    decoders = [decode_frames(video_id, view, resize, first, last, n, e, v, notes)
                for v, (view, n, e) in enumerate(zip(views, view_frames, entries))]
    open_clips: dict[int, list[ClipEncoder]] = {}
    next_chunk = 0
    try:
        for f in range(first, last):
            frames = []
            for view, dec in zip(views, decoders):
                frame = next(dec, None)
                if frame is None:
                    raise SourceError(video_id, view.path, f"the decoder ended at frame {f}")
                frames.append(frame)
            while next_chunk < len(chunks) and chunks[next_chunk][0] == f:
                open_clips[next_chunk] = [
                    ClipEncoder(p, fps, view.size, settings, colour=view.colour, display_matrix=view.display_matrix,
                                sar=view.sar, field_order=view.field_order)
                    for p, view in zip(clip_paths[next_chunk], views)
                ]
                next_chunk += 1
            for c, encoders in list(open_clips.items()):
                for enc, frame in zip(encoders, frames):
                    enc.write(frame)
                if chunks[c][1] == f + 1:
                    for enc in open_clips.pop(c):
                        enc.close()
                    if finished is not None:
                        finished(c)
        for dec in decoders:  # on to the next entry or the file's end: the count checked there
            for _ in dec:
                raise AssertionError("decode_frames yields no frame past its stop")
    except BaseException:
        for encoders in open_clips.values():
            for enc in encoders:
                enc.abort()
        raise
    finally:
        for dec in decoders:
            dec.close()
