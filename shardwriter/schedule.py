"""The driver's plan and its streaming schedule: metadata in, tasks out.

`make_plan` is pure: the probed videos -> the sample order (decided before any encoding:
it needs only the frame counts). `run_plan` submits encode tasks in that order and cuts
shards from it as the samples' real sizes come back from the encode tasks (the greedy rule
of plan.closes_shard: a shard is closed when the next sample would take it past
--shard-size), submitting each shard task as soon as its samples are known, so shards are
published while later videos are still being encoded. An encode task is a run of
consecutive chunks of one video (task.py; plan.cut_runs, about plan.run_frames frames each),
so one long video keeps every worker busy. A video's samples go into shards once all its
runs are done (a video skipped under --on-error skip never has a sample published). At most
`parallelism` encode tasks are in flight, none further ahead than the last run of the video
of the first sample not yet in a shard plus `parallelism`, so the spool holds about one
group of videos (plan.sample_order).

A resumed job reads the records of the runs finished before (task.finished_runs) and cuts
runs over the chunks no record lists: which runs a job was cut into never changes a byte.

Sizes are the encode tasks' deterministic output, so the cut is the same for any engine,
worker count or resume; a shard task that finds its shard's record from an earlier run
(assemble.py) must have put exactly the same samples in it.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import logging
import re
from typing import Any

from streaming.format import dumps, sample_key, video_of

from .assemble import SHARD_NAME, PlannedSample, ShardTask, run_shard_task
from .engine import Engine
from .errors import SourceError, WriterError
from .keypoints import Schema
from .plan import chunk_plan, closes_shard, cut_runs, run_frames, sample_order
from .probe import ProbeResult
from .source import VideoSpec
from .store import open_store
from .task import ChunkRecord, RunTask, finished_runs, run_encode_task

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


@dataclasses.dataclass(frozen=True, kw_only=True)
class VideoResult:
    """A video whose every chunk is encoded: what index.json says of it."""

    video_id: str
    num_frames: int
    fps: str  # "num/den"
    nsegments: int  # segments of the whole source timeline
    labels: list[str]  # labels used by the source timeline, sorted
    chunks: list[ChunkRecord]  # in chunk order

    @classmethod
    def of(cls, spec: VideoSpec, chunks: list[ChunkRecord]) -> VideoResult:
        return cls(video_id=spec.video_id, num_frames=spec.num_frames, fps=f"{spec.fps.numerator}/{spec.fps.denominator}",
                   nsegments=len(spec.timeline), labels=sorted({s.label for s in spec.timeline}),
                   chunks=sorted(chunks, key=lambda c: c.chunk_index))


@dataclasses.dataclass(kw_only=True)
class Outcome:
    results: dict[str, VideoResult]
    shards: list[Any]  # ShardEntry, in order
    problems: list[SourceError]  # videos that failed while encoding (on_error skip)


def plan_runs(plan: Plan, probes: dict[str, ProbeResult], config, parallelism: int, done: set[str],
              frames: int | None = None) -> tuple[list[tuple[str, int, int]], list[str]]:
    """Every encode task, (video, first chunk, stop chunk), in the order the shards need them:
    runs of about plan.run_frames frames (or `frames`) over the chunks not `done`; and a line
    for the log per video kept whole because a view cannot be entered mid-file (every run
    would decode it from its start: the video's decoding times its runs)."""
    videos = list(dict.fromkeys(video_of(k) for k in plan.order))
    frames = frames or run_frames(sum(probes[v].spec.num_frames for v in videos), parallelism)
    runs, notes = [], []
    for v in videos:
        spec = probes[v].spec
        chunks = chunk_plan(spec.num_frames, config.max_video_frames, config.overlap)
        todo = [sample_key(v, c) not in done for c in range(len(chunks))]
        # A view without an entry past frame 0 would be decoded from its start by every run.
        closed = [(path, e.why_not or "no keyframe after frame 0 is a clean cut") for path, e in zip(spec.paths, spec.entries)
                  if not e.points]
        cut = cut_runs(chunks, frames if not closed else chunks[-1][1], todo)
        if closed and len(cut_runs(chunks, frames, todo)) > len(cut):
            notes.append(f"video {v}: {closed[0][0]}: cannot be entered mid-file ({closed[0][1]}); the video is "
                         "encoded as one task")
        runs += [(v, first, stop) for first, stop in cut]
    return runs, notes


def run_plan(engine: Engine, plan: Plan, probes: dict[str, ProbeResult], config, schema: Schema, origin: dict[str, str],
             work: str, output: str, part_bytes: int, progress=None, frames: int | None = None) -> Outcome:
    """`frames`: the frames of an encode task (None: plan.run_frames for the engine's parallelism)."""
    order = plan.order
    records: dict[str, ChunkRecord] = {}  # every encoded sample, this run's and those finished before a resume
    for finished in finished_runs(open_store(work)):
        if finished.video_id in probes:
            records.update((c.key, c) for c in finished.chunks)
    runs, notes = plan_runs(plan, probes, config, engine.parallelism, set(records), frames)
    for note in notes:
        log.warning("%s", note)
    last_run = {v: i for i, (v, _, _) in enumerate(runs)}  # a video's samples go into shards once all its runs are done
    runs_left = collections.Counter(v for v, _, _ in runs)
    plans: dict[str, list[tuple[int, int]]] = {}  # each video's chunk_plan, computed once

    def chunks_of(v: str) -> list[tuple[int, int]]:
        if v not in plans:
            plans[v] = chunk_plan(probes[v].spec.num_frames, config.max_video_frames, config.overlap)
        return plans[v]

    results: dict[str, VideoResult] = {}
    failed: dict[str, SourceError] = {}
    noted: set[tuple[str, str]] = set()  # (file, note with its numbers left out) logged
    entries: dict[int, Any] = {}
    planned: dict[int, tuple[str, ...]] = {}  # shard index -> its keys, until its entry is back
    running: dict[Any, tuple[str, Any]] = {}
    shard: list[PlannedSample] = []  # the shard being filled, and its bytes
    payload = 0
    next_run = cut = encoding = submitted = 0  # order[cut] is the first sample not yet in a shard

    def submit_shard() -> None:
        nonlocal shard, payload, submitted
        index, submitted = submitted, submitted + 1
        task = ShardTask(index=index, output=output, work=work, samples=tuple(shard), part_bytes=part_bytes)
        running[engine.submit(run_shard_task, task)] = ("shard", index)
        planned[index] = tuple(s.key for s in shard)
        shard, payload = [], 0

    def video_done(v: str) -> None:
        if not runs_left[v] and v not in failed:
            spec = probes[v].spec
            keys = [sample_key(v, c) for c in range(len(chunks_of(v)))]
            missing = [k for k in keys if k not in records]
            if missing:
                raise WriterError(f"{missing[0]}: planned, but no encode task of its video wrote it")
            results[v] = VideoResult.of(spec, [records[k] for k in keys])

    for v in dict.fromkeys(video_of(k) for k in order):
        video_done(v)  # a resumed job: videos encoded before
    while True:
        # No further ahead than the last run of the video of the first sample not yet in a shard,
        # plus a run per worker.
        horizon = (last_run.get(video_of(order[cut]), -1) if cut < len(order) else len(runs)) + engine.parallelism
        while next_run < len(runs) and encoding < engine.parallelism and next_run <= horizon:
            v, first, stop = runs[next_run]
            next_run += 1
            if v in failed:
                continue
            spec = probes[v].spec
            chunks = chunks_of(v)
            lo, hi = chunks[first][0], chunks[stop - 1][1]
            spec = dataclasses.replace(spec, entries=tuple(e.around(lo, hi) for e in spec.entries))  # the run's only
            task = RunTask(spec=spec, max_video_frames=config.max_video_frames, overlap=config.overlap,
                           encode=config.encode, keypoint_schema=schema, keypoint_origin=origin, work=work,
                           first=first, stop=stop)
            running[engine.submit(run_encode_task, task)] = ("run", v)
            encoding += 1
        while cut < len(order) and (video_of(order[cut]) in failed or video_of(order[cut]) in results):
            key = order[cut]
            cut += 1
            if video_of(key) in failed:  # on_error skip: the video's samples are left out
                continue
            sample = _planned(records[key])
            if shard and closes_shard(payload, sample.size, config.shard_bytes):
                submit_shard()
            shard.append(sample)
            payload += sample.size
        if cut == len(order) and shard:
            submit_shard()
        if not running:
            if cut < len(order):  # a bug, never a short dataset: every planned sample is in a shard or skipped
                raise WriterError(f"{order[cut]}: planned, but the schedule ended before its shard")
            break
        for handle, outcome in engine.wait(list(running)):
            kind, what = running.pop(handle)
            if isinstance(outcome, SourceError) and kind == "run" and config.on_error == "skip":
                if what not in failed:
                    log.warning("skipping %s", outcome)
                    failed[what] = outcome
                    results.pop(what, None)
            elif isinstance(outcome, BaseException):
                raise outcome
            elif kind == "run":
                records.update((c.key, c) for c in outcome.chunks)
                for note in outcome.notes:  # each kind once per file (every run of a view may say the same)
                    path, _, rest = note.partition(": cannot")
                    said = (path, re.sub(r"\d+", "N", rest))
                    if said not in noted:
                        noted.add(said)
                        log.warning("video %s: %s (logged once per file)", what, note)
                runs_left[what] -= 1
                video_done(what)
            else:
                if tuple(s.key for s in outcome.samples) != planned.pop(what):
                    raise WriterError(f"{work}: the record of {SHARD_NAME.format(what)} from an earlier run lists other "
                                      "samples than this run puts in it: write into a new OUTPUT")
                entries[what] = outcome
                if progress is not None:
                    progress.update(outcome.nsamples)
            encoding -= kind == "run"
    return Outcome(results=results, shards=[entries[k] for k in sorted(entries)],
                   problems=[failed[v] for v in sorted(failed)])


def _planned(chunk: ChunkRecord) -> PlannedSample:
    return PlannedSample(key=chunk.key, size=chunk.size, nframes=chunk.end - chunk.start, nsegments=chunk.nsegments, segments=chunk.segments)
