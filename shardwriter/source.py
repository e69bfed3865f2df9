"""Reading the source dataset's layout (docs/source-layout.md) into validated VideoSpecs.

    SOURCE/videos/<video_id>/<view>.<ext>
    SOURCE/annotations/<video_id>.json
    SOURCE/keypoints/<video_id>/<view>/<frame:06d>_<kind>.npz   (optional)

Everything here runs once on the driver, before any encoding: a bad video is reported
with its file and reason, and either stops the job or is skipped, before a shard exists.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from fractions import Fraction
from typing import Any

import av

from streaming.format import RESERVED_VIEWS, SAFE_NAME

from .errors import SourceError, WriterError
from .keypoints import Schema, frame_schema, list_keypoints
from .plan import SourceSegment, check_timeline

log = logging.getLogger("vidshard.write")


@dataclasses.dataclass(frozen=True, kw_only=True)
class ViewProbe:
    path: str
    num_frames: int  # video packets counted by demuxing (checked again when decoding)
    fps: Fraction
    width: int
    height: int
    codec: str


@dataclasses.dataclass(frozen=True, kw_only=True)
class VideoSpec:
    """One validated source video: plain values, so a task can run in any process."""

    video_id: str
    views: tuple[str, ...]
    paths: tuple[str, ...]  # one file per view, in `views` order
    num_frames: int  # frames written (the shortest view's count under truncate_views)
    view_frames: tuple[int, ...]  # each view's own frame count
    fps: Fraction
    sizes: tuple[tuple[int, int], ...]  # (width, height) per view, as stored in the source
    timeline: tuple[SourceSegment, ...]
    annotation: dict[str, Any]  # the annotation's keys other than "timeline"
    keypoint_dirs: tuple[str | None, ...]  # per view; None where the view has none


@dataclasses.dataclass(frozen=True, kw_only=True)
class ScanResult:
    videos: list[VideoSpec]
    problems: list[SourceError]
    views: tuple[str, ...]
    keypoint_schema: Schema  # empty when the source has no keypoints
    keypoint_origin: dict[str, str]  # kind -> the file its schema was taken from


def probe_view(video_id: str, path: str) -> ViewProbe:
    """Open one view file and count its frames without decoding them."""
    try:
        with av.open(path) as container:
            if not container.streams.video:
                raise SourceError(video_id, path, "no video stream in the file")
            stream = container.streams.video[0]
            fps = stream.average_rate or stream.guessed_rate
            width, height, codec = stream.codec_context.width, stream.codec_context.height, stream.codec_context.name
            count = sum(1 for packet in container.demux(stream) if packet.size)
    except av.FFmpegError as exc:
        raise SourceError(video_id, path, f"unreadable or corrupt video ({exc})") from None
    if count == 0:
        raise SourceError(video_id, path, "zero-frame video")
    if not fps:
        raise SourceError(video_id, path, "the video stream has no frame rate")
    return ViewProbe(path=path, num_frames=count, fps=Fraction(fps), width=width, height=height, codec=codec)


def discover_views(videos_dir: str, video_ids: list[str]) -> tuple[str, ...]:
    """Every view name that occurs as `<view>.<ext>` in some video folder, sorted."""
    names = set()
    for vid in video_ids:
        for entry in os.scandir(os.path.join(videos_dir, vid)):
            if entry.is_file():
                names.add(entry.name.partition(".")[0])
    return tuple(sorted(names))


def check_view_names(views: tuple[str, ...]) -> None:
    for view in views:
        if not SAFE_NAME.fullmatch(view) or view in RESERVED_VIEWS:
            raise WriterError(
                f"view name {view!r} cannot name a tar member: use letters, digits, '_' or '-' "
                f"(no dots), at most 64 characters, not one of {sorted(RESERVED_VIEWS)}"
            )
    if len(set(views)) != len(views):
        raise WriterError(f"views listed twice: {list(views)}")


def _view_file(video_id: str, folder: str, view: str) -> str:
    matches = sorted(e.path for e in os.scandir(folder) if e.is_file() and e.name.partition(".")[0] == view)
    if not matches:
        raise SourceError(video_id, os.path.join(folder, f"{view}.*"), f"missing view file for view {view!r}")
    if len(matches) > 1:
        raise SourceError(video_id, matches[1], f"more than one file for view {view!r}: {matches}")
    return matches[0]


def _annotation(video_id: str, path: str) -> tuple[Any, dict[str, Any]]:
    try:
        with open(path, encoding="utf-8") as f:
            obj = json.load(f)
    except FileNotFoundError:
        raise SourceError(video_id, path, "missing annotation JSON") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise SourceError(video_id, path, f"invalid annotation JSON ({exc})") from None
    if not isinstance(obj, dict) or "timeline" not in obj:
        raise SourceError(video_id, path, 'invalid annotation JSON: expected an object with a "timeline" list')
    return obj["timeline"], {k: v for k, v in obj.items() if k != "timeline"}


def load_video(root: str, video_id: str, views: tuple[str, ...], truncate_views: bool) -> VideoSpec:
    """Validate one video; raises SourceError naming the file and the reason."""
    folder = os.path.join(root, "videos", video_id)
    if not SAFE_NAME.fullmatch(video_id):
        raise SourceError(
            video_id, folder, "video id cannot form a sample key: use letters, digits, '_' or '-' (no dots), <= 64 chars"
        )
    probes = [probe_view(video_id, _view_file(video_id, folder, view)) for view in views]
    counts = [p.num_frames for p in probes]
    if len(set(counts)) > 1 and not truncate_views:
        detail = ", ".join(f"{v}={n}" for v, n in zip(views, counts))
        raise SourceError(video_id, folder, f"views have different frame counts ({detail}); --truncate-views writes the shortest")
    rates = {p.fps for p in probes}
    if len(rates) > 1:
        detail = ", ".join(f"{v}={p.fps}" for v, p in zip(views, probes))
        raise SourceError(video_id, folder, f"views have different frame rates ({detail})")
    num_frames = min(counts)
    if len(set(counts)) > 1:
        log.warning("video %r: views have %s frames; --truncate-views writes the first %d",
                    video_id, dict(zip(views, counts)), num_frames)
    ann_path = os.path.join(root, "annotations", f"{video_id}.json")
    raw_timeline, annotation = _annotation(video_id, ann_path)
    try:
        # Checked against the longest view; --truncate-views then cuts segments at the end.
        timeline = check_timeline(raw_timeline, max(counts))
    except ValueError as exc:
        raise SourceError(video_id, ann_path, f"invalid timeline: {exc}") from None
    timeline = [
        SourceSegment(start=s.start, end=min(s.end, num_frames), label=s.label) for s in timeline if s.start < num_frames
    ]
    kpt_dirs = []
    for view, view_frames in zip(views, counts):
        kdir = os.path.join(root, "keypoints", video_id, view)
        if os.path.isdir(kdir):
            list_keypoints(video_id, kdir, view_frames)  # names and frame range, checked here once
            kpt_dirs.append(kdir)
        else:
            kpt_dirs.append(None)
    return VideoSpec(
        video_id=video_id,
        views=views,
        paths=tuple(p.path for p in probes),
        num_frames=num_frames,
        view_frames=tuple(counts),
        fps=probes[0].fps,
        sizes=tuple((p.width, p.height) for p in probes),
        timeline=tuple(timeline),
        annotation=annotation,
        keypoint_dirs=tuple(kpt_dirs),
    )


def keypoint_schema(videos: list[VideoSpec]) -> tuple[Schema, dict[str, str]]:
    """The dataset's keypoint arrays, from the first file of each kind (sorted order)."""
    schema: Schema = {}
    origin: dict[str, str] = {}
    for spec in videos:
        for kdir, view_frames in zip(spec.keypoint_dirs, spec.view_frames):
            if kdir is None:
                continue
            for frame, kinds in sorted(list_keypoints(spec.video_id, kdir, view_frames).items()):
                for kind, path in sorted(kinds.items()):
                    if kind in origin:
                        continue
                    try:
                        schema.update(frame_schema(spec.video_id, kind, path))
                    except SourceError:
                        continue  # reported by its own video's task; take the schema elsewhere
                    origin[kind] = path
    return schema, origin


def scan_source(root: str, views: tuple[str, ...] | None = None, truncate_views: bool = False) -> ScanResult:
    """List and validate every video of SOURCE; problems are collected, not raised."""
    videos_dir = os.path.join(root, "videos")
    if not os.path.isdir(videos_dir):
        raise WriterError(f"{videos_dir}: no such directory (expected SOURCE/videos/<video_id>/<view>.mp4)")
    video_ids = sorted(e.name for e in os.scandir(videos_dir) if e.is_dir())
    if not video_ids:
        raise WriterError(f"{videos_dir}: no video folders")
    views = tuple(views) if views else discover_views(videos_dir, video_ids)
    check_view_names(views)
    good, problems = [], []
    for vid in video_ids:
        try:
            good.append(load_video(root, vid, views, truncate_views))
        except SourceError as exc:
            problems.append(exc)
    schema, origin = ({}, {})
    if good:
        schema, origin = keypoint_schema(good)
    return ScanResult(videos=good, problems=problems, views=views, keypoint_schema=schema, keypoint_origin=origin)
