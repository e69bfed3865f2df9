"""The driver's plan and its streaming schedule: metadata in, tasks out.

`make_plan` is pure: the probed videos -> the sample order (decided before any encoding:
it needs only the frame counts). `run_plan` submits encode tasks in that order and cuts
shards from it as the samples' real sizes come back from the encode tasks (the greedy rule
of plan.closes_shard: a shard is closed when the next sample would take it past
--shard-size), submitting each shard task as soon as its samples are known, so shards are
published while later videos are still being encoded. It keeps at most `parallelism`
encode tasks in flight, none further ahead than the video of the first sample not yet in a
shard plus `parallelism`, so the spool holds about one group of videos (plan.sample_order).

Sizes are the encode tasks' deterministic output, so the cut is the same for any engine,
worker count or resume; a shard task that finds its shard's record from an earlier run
(assemble.py) must have put exactly the same samples in it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from typing import Any

from streaming.format import dumps, video_of

from .assemble import SHARD_NAME, PlannedSample, ShardTask, run_shard_task
from .engine import Engine
from .errors import SourceError, WriterError
from .keypoints import Schema
from .plan import chunk_plan, closes_shard, sample_order
from .probe import ProbeResult
from .task import ChunkRecord, VideoResult, VideoTask, run_video_task

log = logging.getLogger("vidshard.write")
PLAN_NAME = "plan.json"


@dataclasses.dataclass(frozen=True, kw_only=True)
class Plan:
    """What a resumed run must find unchanged: the source, the outcome of probing, the order."""

    videos: dict[str, str]  # video id -> source fingerprint (probe.fingerprint)
    skipped: list[dict[str, Any]]  # SourceError.to_json() of the videos probing rejected
    order: list[str]  # every sample key, in shard order; shards are consecutive runs of it

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def make_plan(probes: list[ProbeResult], skipped: list[SourceError], config) -> Plan:
    chunks = {p.spec.video_id: len(chunk_plan(p.spec.num_frames, config.max_video_frames, config.overlap)) for p in probes}
    return Plan(videos={p.spec.video_id: p.fingerprint for p in sorted(probes, key=lambda p: p.spec.video_id)},
                skipped=[s.to_json() for s in skipped], order=sample_order(chunks, config.seed, config.mix_videos))


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
            "the videos skipped by probing changed" if saved["skipped"] != plan.skipped else "the sample order changed")
    raise WriterError(f"{output} holds an unfinished run whose saved plan no longer holds ({what}); "
                      "restore the source to resume it, or write into a new OUTPUT")


@dataclasses.dataclass(kw_only=True)
class Outcome:
    results: dict[str, VideoResult]
    shards: list[Any]  # ShardEntry, in order
    problems: list[SourceError]  # videos that failed while encoding (on_error skip)


def run_plan(engine: Engine, plan: Plan, probes: dict[str, ProbeResult], config, schema: Schema, origin: dict[str, str],
             work: str, output: str, part_bytes: int, progress=None) -> Outcome:
    order = plan.order
    videos = list(dict.fromkeys(video_of(k) for k in order))  # encode order: the order shards need them
    position = {v: i for i, v in enumerate(videos)}
    results: dict[str, VideoResult] = {}
    failed: dict[str, SourceError] = {}
    chunks: dict[str, ChunkRecord] = {}  # encoded samples not yet put in a shard
    entries: dict[int, Any] = {}
    planned: dict[int, tuple[str, ...]] = {}  # shard index -> its keys, until its entry is back
    running: dict[Any, tuple[str, Any]] = {}
    shard: list[PlannedSample] = []  # the shard being filled, and its bytes
    payload = 0
    next_video = cut = encoding = submitted = 0  # order[cut] is the first sample not yet in a shard

    def submit_shard() -> None:
        nonlocal shard, payload, submitted
        index, submitted = submitted, submitted + 1
        task = ShardTask(index=index, output=output, work=work, samples=tuple(shard), part_bytes=part_bytes)
        running[engine.submit(run_shard_task, task)] = ("shard", index)
        planned[index] = tuple(s.key for s in shard)
        shard, payload = [], 0

    while True:
        horizon = (position[video_of(order[cut])] if cut < len(order) else len(videos)) + engine.parallelism
        while next_video < len(videos) and encoding < engine.parallelism and next_video <= horizon:
            spec = probes[videos[next_video]].spec
            task = VideoTask(spec=spec, max_video_frames=config.max_video_frames, overlap=config.overlap,
                             encode=config.encode, keypoint_schema=schema, keypoint_origin=origin, work=work)
            running[engine.submit(run_video_task, task)] = ("video", spec.video_id)
            next_video += 1
            encoding += 1
        while cut < len(order) and (video_of(order[cut]) in results or video_of(order[cut]) in failed):
            key = order[cut]
            cut += 1
            if video_of(key) in failed:  # on_error skip: the video's samples are left out
                continue
            if key not in chunks:
                raise WriterError(f"{key}: planned, but its video's encode task did not write it")
            sample = _planned(chunks.pop(key))
            if shard and closes_shard(payload, sample.size, config.shard_bytes):
                submit_shard()
            shard.append(sample)
            payload += sample.size
        if cut == len(order) and shard:
            submit_shard()
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
                chunks.update((c.key, c) for c in outcome.chunks)
            else:
                if tuple(s.key for s in outcome.samples) != planned.pop(what):
                    raise WriterError(f"{work}: the record of {SHARD_NAME.format(what)} from an earlier run lists other "
                                      "samples than this run puts in it: write into a new OUTPUT")
                entries[what] = outcome
                if progress is not None:
                    progress.update(outcome.nsamples)
            encoding -= kind == "video"
    return Outcome(results=results, shards=[entries[k] for k in sorted(entries)],
                   problems=[failed[v] for v in sorted(failed)])


def _planned(chunk: ChunkRecord) -> PlannedSample:
    return PlannedSample(key=chunk.key, size=chunk.size, nframes=chunk.end - chunk.start, nsegments=chunk.nsegments, segments=chunk.segments)
