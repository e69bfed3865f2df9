"""The driver's plan and its streaming schedule: metadata in, tasks out.

`make_plan` is pure: the probed videos -> the sample order and each shard's membership
(decided before any encoding, sizes estimated from each view's pilot GOP). `run_plan`
submits encode tasks in plan order and each shard task as soon as every video it needs is
encoded, so shards are published while later videos are still being encoded; it keeps at
most `parallelism` encode tasks in flight, and none further ahead than the videos the first
unfinished shard needs plus `parallelism`, so the spool holds about one group of videos.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from typing import Any

import numpy as np

from streaming.format import dumps, video_of

from .assemble import PlannedSample, ShardTask, run_shard_task
from .engine import Engine
from .errors import SourceError, WriterError
from .keypoints import Schema, npz_bytes
from .plan import chunk_plan, clip_timeline, estimate_clip_bytes, estimate_sample_bytes, plan_shards, sample_order
from .probe import ProbeResult
from .task import VideoResult, VideoTask, run_video_task

log = logging.getLogger("vidshard.write")
PLAN_NAME = "plan.json"


@dataclasses.dataclass(frozen=True, kw_only=True)
class Plan:
    """What a resumed run must find unchanged: the source, the outcome of probing, the shards."""

    videos: dict[str, str]  # video id -> source fingerprint (probe.fingerprint)
    skipped: list[dict[str, Any]]  # SourceError.to_json() of the videos probing rejected
    shards: list[list[str]]  # each shard's sample keys, in order; their concatenation is the sample order

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def make_plan(probes: list[ProbeResult], skipped: list[SourceError], config, schema: Schema) -> Plan:
    chunks = {p.spec.video_id: chunk_plan(p.spec.num_frames, config.max_video_frames, config.overlap) for p in probes}
    order = sample_order({v: len(c) for v, c in chunks.items()}, config.seed, config.mix_videos)
    by_video = {p.spec.video_id: p for p in probes}
    kpt_bytes: dict[int, int] = {}
    estimates = []
    for key in order:
        probe = by_video[video_of(key)]
        start, end = chunks[probe.spec.video_id][int(key.rsplit("_", 1)[1])]
        estimates.append(_estimate(probe, start, end, schema, kpt_bytes))
    shards = [[order[i] for i in span] for span in plan_shards(estimates, config.shard_bytes)]
    return Plan(videos={p.spec.video_id: p.fingerprint for p in sorted(probes, key=lambda p: p.spec.video_id)},
                skipped=[s.to_json() for s in skipped], shards=shards)


def _estimate(probe: ProbeResult, start: int, end: int, schema: Schema, kpt_cache: dict[int, int]) -> int:
    spec, frames = probe.spec, end - start
    members = [estimate_clip_bytes(b, probe.pilot_frames, frames) for b in probe.pilot_bytes]
    if schema:  # stacked keypoints have a fixed layout: their size is exact
        if frames not in kpt_cache:
            arrays = {n: np.zeros((frames, *shape), np.dtype(dt)) for n, (shape, dt) in schema.items()}
            kpt_cache[frames] = len(npz_bytes({**arrays, "mask": np.zeros(frames, bool)}))
        members += [kpt_cache[frames]] * len(spec.views)
    members.append(1024 + 64 * len(spec.views) + len(dumps(spec.annotation)))  # meta.json
    members.append(32 + 240 * len(clip_timeline(spec.timeline, start, end)))  # timeline.json
    return estimate_sample_bytes(members)


def check_plan(work, plan: Plan, output: str) -> None:
    """Save the plan before the first shard is published; on resume, refuse another one."""
    wanted = dumps(plan.to_json())
    if not work.exists(PLAN_NAME):
        work.write(PLAN_NAME, wanted)
        return
    saved = json.loads(work.read(PLAN_NAME))
    if saved == json.loads(wanted):
        return
    changed = sorted(v for v in set(saved["videos"]) | set(plan.videos) if saved["videos"].get(v) != plan.videos.get(v))
    what = (f"source videos changed since the run began: {changed[:5]}" if changed else
            "the videos skipped by probing changed" if saved["skipped"] != plan.skipped else "the shard plan changed")
    raise WriterError(f"{output} holds an unfinished run whose saved plan no longer holds ({what}); "
                      "restore the source to resume it, or write into a new OUTPUT")


@dataclasses.dataclass(kw_only=True)
class Outcome:
    results: dict[str, VideoResult]
    shards: list[Any]  # ShardEntry, in plan order
    problems: list[SourceError]  # videos that failed while encoding (on_error skip)


def run_plan(engine: Engine, plan: Plan, probes: dict[str, ProbeResult], config, schema: Schema, origin: dict[str, str],
             work: str, output: str, part_bytes: int, progress=None) -> Outcome:
    needs = [list(dict.fromkeys(video_of(k) for k in keys)) for keys in plan.shards]
    videos = list(dict.fromkeys(v for vs in needs for v in vs))  # encode order: the order shards need them
    position = {v: i for i, v in enumerate(videos)}
    results: dict[str, VideoResult] = {}
    failed: dict[str, SourceError] = {}
    entries: dict[int, Any] = {}
    running: dict[Any, tuple[str, Any]] = {}
    next_video = next_shard = first_open = 0
    encoding = 0
    while len(entries) < len(plan.shards):
        while first_open < len(plan.shards) and first_open in entries:
            first_open += 1
        horizon = (max(position[v] for v in needs[first_open]) if first_open < len(plan.shards) else 0) + engine.parallelism
        while next_video < len(videos) and encoding < engine.parallelism and next_video <= horizon:
            spec = probes[videos[next_video]].spec
            task = VideoTask(spec=spec, max_video_frames=config.max_video_frames, overlap=config.overlap,
                             encode=config.encode, keypoint_schema=schema, keypoint_origin=origin, work=work)
            running[engine.submit(run_video_task, task)] = ("video", spec.video_id)
            next_video += 1
            encoding += 1
        while next_shard < len(plan.shards) and all(v in results or v in failed for v in needs[next_shard]):
            samples = tuple(
                PlannedSample(key=c.key, size=c.size, nframes=c.end - c.start, nsegments=c.nsegments, segments=c.segments)
                for c in (_chunk(results, k) for k in plan.shards[next_shard] if video_of(k) in results)
            )
            if samples:
                task = ShardTask(index=next_shard, output=output, work=work, samples=samples, part_bytes=part_bytes)
                running[engine.submit(run_shard_task, task)] = ("shard", next_shard)
            else:  # every video of this shard failed (on_error skip): the name stays unused
                entries[next_shard] = None
            next_shard += 1
        if not running:
            break
        for handle, outcome in engine.wait(list(running)):
            kind, what = running.pop(handle)
            if isinstance(outcome, SourceError) and kind == "video" and config.on_error == "skip":
                log.warning("skipping %s", outcome)
                failed[what] = outcome
            elif isinstance(outcome, BaseException):
                raise outcome
            elif kind == "video":
                results[what] = outcome
            else:
                entries[what] = outcome
                if progress is not None:
                    progress.update(1)
            encoding -= kind == "video"
    return Outcome(results=results, shards=[entries[k] for k in sorted(entries) if entries[k] is not None],
                   problems=[failed[v] for v in sorted(failed)])


def _chunk(results: dict[str, VideoResult], key: str):
    result = results[video_of(key)]
    for chunk in result.chunks:
        if chunk.key == key:
            return chunk
    raise WriterError(f"{key}: planned, but its video's encode task did not write it")
