"""What the reader would refuse, refused by the writer first: the reader's own limits
(`streaming.format.Limits`, defaults) and key format applied to one probed video, on the
driver, before its first byte is written. Each refusal is a SourceError naming the file.

    chunks        no more than the sample key's CHUNK_DIGITS digits number
    chunk frames  at most Limits.max_chunk_frames per chunk
    frame rate    inside the reader's [MIN_FPS, MAX_FPS]
    frame size    at most Limits.max_frame_pixels per clip frame
    chunk item    a chunk-mode item (every view, every frame, stored size) at most Limits.max_item_bytes
    kpt.npz       the schema's arrays for a chunk's frames at most Limits.max_member_bytes (npz_bound)
    meta.json     at most Limits.max_json_bytes, sized from the chunk with the largest numbers
    timeline.json at most Limits.max_segments segments and max_json_bytes per chunk

Keypoint array names and dtypes are checked where they are read (keypoints.py).
"""

from __future__ import annotations

import bisect
import math
import os

from streaming.format import CHUNK_DIGITS, MAX_FPS, MIN_FPS, Limits, dumps, npz_bound, timeline_to_json

from .encode import view_encode
from .errors import SourceError
from .plan import chunk_plan, clip_timeline
from .source import VideoSpec
from .task import chunk_meta

LIMITS = Limits()  # the reader's defaults: what VideoShardDataset applies unless told otherwise


def writable(probes: list, config, source: str) -> tuple[list, list[SourceError]]:
    """The probed videos whose samples the reader can take, and a SourceError for each other
    one (write and `vidshard check` alike)."""
    good, refused = [], []
    kinds = frozenset(n.partition(".")[0] for p in probes for n in p.schema)  # what meta.json may list, at most
    for probe in probes:
        try:
            check_video(probe.spec, config, source, kinds, probe.schema)
        except SourceError as exc:
            refused.append(exc)
        else:
            good.append(probe)
    return good, refused


def check_video(spec: VideoSpec, config, source: str, kinds: frozenset[str] = frozenset(), schema: dict | None = None) -> None:
    """SourceError naming the video's folder or file when the reader would refuse a sample
    of it. `kinds`: keypoint kinds of the whole dataset (meta.json lists them); `schema`: this
    video's keypoint arrays (name -> (per-frame shape, dtype))."""
    folder = os.path.join(source, "videos", spec.video_id)
    if not MIN_FPS <= spec.fps <= MAX_FPS:
        raise SourceError(spec.video_id, spec.paths[0], f"a frame rate of {spec.fps} fps, outside the reader's "
                                                        f"[{MIN_FPS}, {MAX_FPS}]")
    max_frames = config.max_video_frames or spec.num_frames
    step = max_frames - config.overlap
    count = 1 + max(0, math.ceil((spec.num_frames - max_frames) / step))  # len(chunk_plan(...)) without the list
    if count > 10**CHUNK_DIGITS:
        least = math.ceil((spec.num_frames - config.overlap) / 10**CHUNK_DIGITS) + config.overlap
        raise SourceError(spec.video_id, folder,
                          f"{spec.num_frames} frames make {count} chunks of at most {max_frames} frames, more than the "
                          f"sample key's {CHUNK_DIGITS} digits number ({10**CHUNK_DIGITS}): pass --max-video-frames {least} "
                          "or more")
    if min(max_frames, spec.num_frames) > LIMITS.max_chunk_frames:
        raise SourceError(spec.video_id, folder, f"chunks of {min(max_frames, spec.num_frames)} frames, over the reader's "
                                                 f"limit of {LIMITS.max_chunk_frames} (Limits.max_chunk_frames): "
                                                 "pass --max-video-frames")
    views = []
    for path, view_source in zip(spec.paths, spec.sources):
        try:
            view = view_encode(path, view_source, config.encode)
        except ValueError as exc:
            raise SourceError(spec.video_id, path, str(exc)) from None
        if view.size[0] * view.size[1] > LIMITS.max_frame_pixels:
            raise SourceError(spec.video_id, path, f"clips of {view.size[0]}x{view.size[1]} pixels, over the reader's limit "
                                                   f"of {LIMITS.max_frame_pixels} per frame (Limits.max_frame_pixels): "
                                                   "pass --resize")
        views.append(view)
    frames = min(max_frames, spec.num_frames)
    item = frames * 3 * sum(v.size[0] * v.size[1] for v in views)
    if item > LIMITS.max_item_bytes:
        raise SourceError(spec.video_id, folder, f"a chunk-mode item of {frames} frames of every view would take {item} bytes, "
                                                 f"over the reader's limit of {LIMITS.max_item_bytes} (Limits.max_item_bytes): "
                                                 "pass --max-video-frames or --resize")
    if schema:
        archive = npz_bound({name: {"shape": list(shape), "dtype": dtype} for name, (shape, dtype) in schema.items()}, frames)
        if archive > LIMITS.max_member_bytes:
            raise SourceError(spec.video_id, os.path.join(source, "keypoints", spec.video_id),
                              f"a chunk's keypoint archive of {frames} frames may take {archive} bytes, over the reader's "
                              f"limit of {LIMITS.max_member_bytes} per member (Limits.max_member_bytes): pass --max-video-frames")
    _check_meta(spec, config, views, kinds, source)
    _check_timelines(spec, config, source)


def widest_meta(spec: VideoSpec, config, views: list, kinds: frozenset[str]) -> int:
    """Bytes of meta.json of the last chunk with the longest chunk's length: no chunk's is
    larger (numbers only grow along the video; the 64 bytes cover any lengths' digits)."""
    chunks = chunk_plan(spec.num_frames, config.max_video_frames, config.overlap)
    start, end = chunks[-1]
    end = start + (chunks[0][1] - chunks[0][0])
    schema = {f"{kind}.x": ((), "<f4") for kind in kinds}
    meta = chunk_meta(spec, config.encode, schema, len(chunks) - 1, len(chunks), start, end, views,
                      {v: end - start for v in spec.views})
    return len(dumps(meta)) + 64


def _check_meta(spec: VideoSpec, config, views: list, kinds: frozenset[str], source: str) -> None:
    size = widest_meta(spec, config, views, kinds)
    if size > LIMITS.max_json_bytes:
        path = os.path.join(source, "annotations", f"{spec.video_id}.json")
        big = max(spec.annotation, key=lambda k: len(dumps(spec.annotation[k])), default=None)
        raise SourceError(spec.video_id, path,
                          f"each chunk's meta.json would take {size} bytes, over the reader's limit of "
                          f"{LIMITS.max_json_bytes} (Limits.max_json_bytes): every annotation key but \"timeline\" is "
                          f"copied into it" + (f", and {big!r} takes {len(dumps(spec.annotation[big]))}" if big else ""))


def _check_timelines(spec: VideoSpec, config, source: str) -> None:
    starts = [s.start for s in spec.timeline]
    ends = [s.end for s in spec.timeline]
    path = os.path.join(source, "annotations", f"{spec.video_id}.json")
    widest = max((len(dumps(timeline_to_json(clip_timeline([s], s.start, s.end)))) for s in spec.timeline), default=0)
    for start, end in chunk_plan(spec.num_frames, config.max_video_frames, config.overlap):
        first, last = bisect.bisect_right(ends, start), bisect.bisect_left(starts, end)  # segments meeting [start, end)
        count = max(0, last - first)
        if count > LIMITS.max_segments:
            raise SourceError(spec.video_id, path, f"the chunk of frames [{start}, {end}) holds {count} timeline segments, "
                                                   f"over the reader's limit of {LIMITS.max_segments} (Limits.max_segments)")
        if count * widest > LIMITS.max_json_bytes:  # a bound; measured exactly only when it is near the limit
            size = len(dumps(timeline_to_json(clip_timeline(spec.timeline, start, end))))
            if size > LIMITS.max_json_bytes:
                raise SourceError(spec.video_id, path, f"the chunk of frames [{start}, {end}) would have a timeline.json of "
                                                       f"{size} bytes, over the reader's limit of {LIMITS.max_json_bytes}")
