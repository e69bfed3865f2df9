"""`vidshard check SOURCE`: every problem and warning of a whole SOURCE at once, before the
first byte.

Every video is probed by a task on the engine (in parallel, like write's probe phase): each
view on its own (probe_views: demuxing to count frames, decoding the first frame only), then
the video's verdict from the same code write runs (probe.run_probe_task on those probes,
then limits.writable): so `check` accepts exactly what write accepts, and write runs this
verdict on every video before it writes anything. Where write names one problem per video,
check names every view's.
"""

from __future__ import annotations

import dataclasses
import math
from fractions import Fraction

from .display import HDR_TRANSFERS, display_rotation, mirrored
from .engine import Engine, run_all
from .errors import SourceError
from .limits import writable
from .media import ViewProbe
from .probe import ProbeResult, ProbeTask, run_probe_task
from .source import check_source, probe_views, view_problems


@dataclasses.dataclass(frozen=True, kw_only=True)
class VideoCheck:
    video_id: str
    views: tuple[str, ...]
    probes: list[ViewProbe | SourceError]  # per view, in `views` order
    result: ProbeResult | None  # the verdict write would reach; None where `problems` stop it
    problems: list[SourceError]  # every view's, then the video's (when no view had one)


def check_video_task(task: ProbeTask) -> VideoCheck:
    probes = probe_views(task.source, task.video_id, task.views)
    problems = [p for p in probes if isinstance(p, SourceError)]
    for probe in probes:
        if isinstance(probe, ViewProbe):
            problems += view_problems(task.video_id, probe, task.encode.autorotate, task.encode.resize is not None)
    result = None
    try:
        # The write's own verdict: with a view problem it raises one of those found above.
        result = run_probe_task(task, probes=None if problems else probes)
    except SourceError as exc:
        if not any(str(exc) == str(p) for p in problems):
            problems.append(exc)
    return VideoCheck(video_id=task.video_id, views=task.views, probes=probes, result=result, problems=problems)


@dataclasses.dataclass(frozen=True, kw_only=True)
class CheckReport:
    videos: list[VideoCheck]
    problems: list[SourceError]  # every one, sorted by video and file
    warnings: list[str]
    stray: tuple[str, ...]

    @property
    def accepted(self) -> bool:
        """What `vidshard write` (--on-error fail) does with this SOURCE: write it."""
        return not self.problems


def check_dataset(source: str, config, engine: Engine) -> CheckReport:
    listing = check_source(source, config.views)  # a layout problem is a WriterError: nothing to list
    views = tuple(config.views) if config.views else listing.views
    tasks = [ProbeTask(source=source, video_id=v, views=views, truncate_views=config.truncate_views, encode=config.encode)
             for v in listing.video_ids]
    videos = []
    for task, outcome in run_all(engine, check_video_task, tasks):
        if isinstance(outcome, BaseException):
            raise outcome
        videos.append(outcome)
    videos.sort(key=lambda v: v.video_id)
    good, refused = writable([v.result for v in videos if v.result is not None], config, source)
    problems = sorted([p for v in videos for p in v.problems] + refused, key=lambda p: (p.video_id or "", p.path))
    warnings = [w for probe in good for w in probe.spec.warnings]
    return CheckReport(videos=videos, problems=problems, warnings=warnings, stray=listing.stray)


def _rate(fps: Fraction) -> str:
    return f"{fps.numerator}/{fps.denominator}" if fps.denominator != 1 else str(fps.numerator)


def view_row(view: str, probe: ViewProbe | SourceError) -> list[str]:
    if isinstance(probe, SourceError):
        return [view, "-", "-", "-", "-", "-", "-", "-", "-", "-", "-", "PROBLEM"]
    s = probe.source
    rotation = display_rotation(s.matrix)
    turn = ("0" if math.isnan(rotation) else str(round(rotation) % 360)) + (" mirrored" if mirrored(s.matrix) else "")
    colour = s.colour.describe()
    return [view, s.codec, f"{s.width}x{s.height}", _rate(probe.fps), str(probe.num_frames), turn,
            f"{colour['range']}/{colour['matrix']}", HDR_TRANSFERS.get(s.colour.transfer, "-").split(" ")[0],
            s.field_order, f"{s.sar.numerator}:{s.sar.denominator}", str(s.covers), "ok"]


HEADER = ["view", "codec", "stored", "fps", "frames", "rotation", "range/matrix", "HDR", "fields", "SAR", "covers", "verdict"]


def format_report(report: CheckReport) -> str:
    lines = []
    per_video: dict[str | None, int] = {}
    for p in report.problems:
        per_video[p.video_id] = per_video.get(p.video_id, 0) + 1
    for video in report.videos:
        rows = [HEADER] + [view_row(v, p) for v, p in zip(video.views, video.probes)]
        widths = [max(len(r[i]) for r in rows) for i in range(len(HEADER))]
        status = f"{per_video[video.video_id]} problem(s)" if video.video_id in per_video else "ok"
        lines.append(f"video {video.video_id}: {status}")
        lines += ["  " + "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    if report.problems:
        lines.append(f"problems ({len(report.problems)}):")
        lines += [f"  {p}" for p in report.problems]
    if report.warnings:
        lines.append(f"warnings ({len(report.warnings)}):")
        lines += [f"  {w}" for w in report.warnings]
    bad = {p.video_id for p in report.problems}
    nviews = sum(len(v.views) for v in report.videos)
    lines.append(f"{len(report.videos)} videos, {nviews} views: {len(report.videos) - len(bad)} writable, {len(bad)} with "
                 f"problems; {len(report.problems)} problems, {len(report.warnings)} warnings, {len(report.stray)} stray "
                 f"files skipped; vidshard write would {'accept' if report.accepted else 'refuse'} this SOURCE")
    return "\n".join(lines)
