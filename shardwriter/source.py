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

from streaming.format import SAFE_NAME, check_views

from .display import HDR_TRANSFERS, orientation_filters
from .errors import SourceError, WriterError
from .keypoints import Schema, frame_schema, list_keypoints
from .media import Entries, ViewProbe, ViewSource, probe_view, same_rate  # noqa: F401  (ViewProbe, probe_view: imported from here)
from .plan import SourceSegment, check_timeline
from .stray import is_stray

log = logging.getLogger("vidshard.write")


@dataclasses.dataclass(frozen=True, kw_only=True)
class SourceListing:
    """SOURCE/videos as listed, before any file is opened."""

    video_ids: tuple[str, ...]  # the folders under videos/, sorted
    views: tuple[str, ...]  # every `<view>` found as `<view>.<ext>`, sorted
    stray: tuple[str, ...]  # paths of files skipped by is_stray, sorted


def _is(entry: os.DirEntry, kind: str) -> bool:
    """entry.is_dir() / is_file(), True where asking fails for another reason than a missing
    target (a symlink loop, EIO): the entry is then listed, and opening it reports the error
    with its path (load_video), instead of a traceback here or a silently missing view."""
    try:
        return entry.is_dir() if kind == "dir" else entry.is_file()
    except OSError:
        return True


def list_source(root: str) -> SourceListing:
    videos_dir = os.path.join(root, "videos")
    if not os.path.isdir(videos_dir):
        raise WriterError(f"{videos_dir}: no such directory (expected SOURCE/videos/<video_id>/<view>.mp4)")
    names, stray, video_ids = set(), [], []
    try:
        entries = sorted(os.scandir(videos_dir), key=lambda e: e.name)
    except OSError as exc:
        raise WriterError(f"{videos_dir}: cannot list the folder ({exc.strerror or exc})") from None
    for entry in entries:
        if is_stray(entry.name):
            stray.append(entry.path)
        elif _is(entry, "dir"):
            video_ids.append(entry.name)
    if not video_ids:
        raise WriterError(f"{videos_dir}: no video folders")
    for vid in video_ids:
        try:
            entries = list(os.scandir(os.path.join(videos_dir, vid)))
        except OSError:
            continue  # its probe names the folder and the reason (_view_file)
        for entry in entries:
            if not _is(entry, "file"):
                continue
            if is_stray(entry.name):
                stray.append(entry.path)
            else:
                names.add(entry.name.partition(".")[0])
    return SourceListing(video_ids=tuple(video_ids), views=tuple(sorted(names)), stray=tuple(sorted(stray)))


def check_source(root: str, views: tuple[str, ...] | None) -> SourceListing:
    """The cheap checks of SOURCE that need no video opened, run before OUTPUT is touched:
    the layout exists, every `--views` name is a view of some video, every discovered view
    can name a tar member. Warns once about stray files (which are then skipped)."""
    listing = list_source(root)
    if listing.stray:
        shown = ", ".join(listing.stray[:10]) + (f" and {len(listing.stray) - 10} more" if len(listing.stray) > 10 else "")
        log.warning("skipping %d file(s) that are not views (system, hidden or editor backup files): %s",
                    len(listing.stray), shown)
    if views:
        unknown = [v for v in views if v not in listing.views]
        if unknown:
            raise WriterError(
                f"--views names {', '.join(map(repr, unknown))}, which no video in {os.path.join(root, 'videos')} has "
                f"(views found: {', '.join(listing.views) or 'none'})"
            )
    else:
        check_view_names(listing.views)
    return listing


@dataclasses.dataclass(frozen=True, kw_only=True)
class VideoSpec:
    """One validated source video: plain values, so a task can run in any process."""

    video_id: str
    views: tuple[str, ...]
    paths: tuple[str, ...]  # one file per view, in `views` order
    num_frames: int  # frames written (the shortest view's count under truncate_views)
    view_frames: tuple[int, ...]  # each view's own frame count
    fps: Fraction
    sources: tuple[ViewSource, ...]  # per view: stored size, orientation, colour
    timeline: tuple[SourceSegment, ...]
    annotation: dict[str, Any]  # the annotation's keys other than "timeline"
    keypoint_dirs: tuple[str | None, ...]  # per view; None where the view has none
    entries: tuple[Entries, ...] = ()  # per view: where an encode task can start decoding (media.entry_points)
    warnings: tuple[str, ...] = ()  # for the driver to log once (HDR, 10-bit, truncated views)


def check_view_names(views: tuple[str, ...]) -> None:
    """The views found in the files obey the rules --views does (config.check_views)."""
    try:
        check_views(views, where="the views found in the source's file names")
    except ValueError as exc:
        raise WriterError(str(exc)) from None


def _view_file(video_id: str, folder: str, view: str) -> str:
    try:
        matches = sorted(
            e.path for e in os.scandir(folder) if _is(e, "file") and not is_stray(e.name) and e.name.partition(".")[0] == view
        )
    except OSError as exc:  # a symlink loop as the video folder, EIO, no permission
        raise SourceError(video_id, folder, f"cannot list the video folder ({exc.strerror or exc})") from None
    if not matches:
        raise SourceError(video_id, os.path.join(folder, f"{view}.*"), f"missing view file for view {view!r}")
    if len(matches) > 1:
        raise SourceError(video_id, matches[1], f"more than one file for view {view!r}: {matches}")
    return matches[0]


def _view_warnings(video_id: str, view: str, path: str, source: ViewSource) -> list[str]:
    where = f"video {video_id!r} view {view!r} ({path})"
    notes = []
    if source.bit_depth > 8:
        notes.append(f"{where}: {source.bit_depth}-bit source ({source.pix_fmt}); clips are 8-bit yuv420p")
    if source.colour.transfer in HDR_TRANSFERS:
        notes.append(
            f"{where}: HDR {HDR_TRANSFERS[source.colour.transfer]} transfer; frames are delivered as the "
            "HDR-coded signal converted with its matrix, not tone-mapped (what `ffmpeg -pix_fmt rgb24` shows too)"
        )
    if source.covers:
        notes.append(f"{where}: {source.covers} other video stream(s) (cover pictures, thumbnails) are not read; "
                     f"stream {source.stream} is the video")
    if source.field_order != "progressive":
        notes.append(f"{where}: interlaced ({source.field_order}); frames are delivered as stored, both fields woven "
                     "into one frame, not deinterlaced")
    if source.sar != 1:
        notes.append(f"{where}: non-square pixels (sample aspect ratio {source.sar.numerator}:{source.sar.denominator}); "
                     "frames are delivered as stored, the clip carries the aspect ratio for players")
    return notes


def _annotation(video_id: str, path: str) -> tuple[Any, dict[str, Any]]:
    try:
        with open(path, encoding="utf-8") as f:
            obj = json.load(f)
    except FileNotFoundError:
        raise SourceError(video_id, path, "missing annotation JSON") from None
    except OSError as exc:  # a directory, a symlink loop, no permission, EIO
        raise SourceError(video_id, path, f"cannot read the annotation JSON ({exc.strerror or exc})") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise SourceError(video_id, path, f"invalid annotation JSON ({exc})") from None
    if not isinstance(obj, dict) or "timeline" not in obj:
        raise SourceError(video_id, path, 'invalid annotation JSON: expected an object with a "timeline" list')
    return obj["timeline"], {k: v for k, v in obj.items() if k != "timeline"}


def probe_views(root: str, video_id: str, views: tuple[str, ...]) -> list[ViewProbe | SourceError]:
    """Each view's probe, or the SourceError that stopped it: every view, whatever the others
    do (`vidshard check` lists them all)."""
    folder = os.path.join(root, "videos", video_id)
    out: list[ViewProbe | SourceError] = []
    for view in views:
        try:
            out.append(probe_view(video_id, _view_file(video_id, folder, view)))
        except SourceError as exc:
            out.append(exc)
    return out


def view_problems(video_id: str, probe: ViewProbe, autorotate: bool, resize: bool) -> list[SourceError]:
    """What stops one probed view from being written (write stops at the first, check lists all)."""
    problems = []
    if autorotate:
        try:
            orientation_filters(probe.source.matrix)
        except ValueError as exc:
            problems.append(SourceError(video_id, probe.path, f"{exc}; --no-autorotate writes the stored orientation"))
    width, height = probe.source.width, probe.source.height  # a rotation keeps both parities
    if not resize and (width % 2 or height % 2):
        problems.append(SourceError(video_id, probe.path,
                                    f"yuv420p H.264 needs an even width and height, got {width}x{height}: pass --resize WxH"))
    return problems


def load_video(
    root: str, video_id: str, views: tuple[str, ...], truncate_views: bool, autorotate: bool = True,
    resize: bool = False, probes: list[ViewProbe] | None = None,
) -> VideoSpec:
    """Validate one video; raises SourceError naming the file and the reason. `resize`: the
    clips get --resize's size, so the views' own sizes need not suit yuv420p. `probes`: the
    views' probes where the caller has them (probe_views)."""
    folder = os.path.join(root, "videos", video_id)
    if not SAFE_NAME.fullmatch(video_id):
        raise SourceError(
            video_id, folder, "video id cannot form a sample key: use letters, digits, '_' or '-' (no dots), <= 64 chars"
        )
    if probes is None:
        probes = [probe_view(video_id, _view_file(video_id, folder, view)) for view in views]
    counts = [p.num_frames for p in probes]
    if len(set(counts)) > 1 and not truncate_views:
        detail = ", ".join(f"{v}={n}" for v, n in zip(views, counts))
        raise SourceError(video_id, folder, f"views have different frame counts ({detail}); --truncate-views writes the shortest")
    # Rates equal within media.RATE_TOLERANCE are one rate (each already snapped to a
    # standard rate it is that close to); the first view's is recorded.
    if any(not same_rate(p.fps, probes[0].fps) for p in probes):
        detail = ", ".join(f"{v}={p.fps}" for v, p in zip(views, probes))
        raise SourceError(video_id, folder, f"views have different frame rates ({detail})")
    warnings = []
    for view, probe in zip(views, probes):
        for problem in view_problems(video_id, probe, autorotate, resize):
            raise problem
        warnings += _view_warnings(video_id, view, probe.path, probe.source)
    num_frames = min(counts)
    if len(set(counts)) > 1:
        warnings.append(f"video {video_id!r}: views have {dict(zip(views, counts))} frames; "
                        f"--truncate-views writes the first {num_frames}")
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
            stray = sorted(name for name in os.listdir(kdir) if is_stray(name))
            if stray:
                warnings.append(f"video {video_id!r}: skipping {len(stray)} file(s) in {kdir} that are not "
                                f"keypoint files (system, hidden or editor backup files): {', '.join(stray[:5])}")
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
        sources=tuple(p.source for p in probes),
        timeline=tuple(timeline),
        annotation=annotation,
        keypoint_dirs=tuple(kpt_dirs),
        entries=tuple(p.entries for p in probes),
        warnings=tuple(warnings),
    )


def keypoint_schema(videos: list[VideoSpec], strict: bool = False) -> tuple[Schema, dict[str, str]]:
    """The dataset's keypoint arrays, from the first file of each kind (sorted order).
    `strict`: a first file that cannot be read, or that index.json could not describe, is
    the video's source error (the probe task: found before anything is written)."""
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
                        if strict:
                            raise
                        continue  # reported by its own video's task; take the schema elsewhere
                    origin[kind] = path
    return schema, origin
