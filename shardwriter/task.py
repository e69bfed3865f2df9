"""The encode task: one run of consecutive chunks of one video -> their samples, spooled in
OUTPUT's own store.

A task is a plain function of a plain RunTask, so the local process pool and Ray run the
same code on any node. A run that starts inside the video enters each view at a keyframe
(media.Entries: found by the probe) and checks the frame count where it stops decoding;
a view that cannot be entered there is decoded from its start, and the result says so.
Clips are encoded into a local temporary folder (mp4's faststart needs a real file); as
soon as a chunk's clips are complete, the chunk sample is written to the work store as its
tar fragment (spool.py) and its clips are deleted, so the worker's disk holds the clips of
the chunks being encoded. `runs/<video_id>.<first>-<stop>.json` (the result) is written
last: a task killed mid-way is simply run again, and its fragments are rewritten with the
same bytes; a resumed job plans runs over the chunks no record lists (schedule.py).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import tempfile
from typing import Any

from streaming.format import META, TIMELINE, Limits, clip_suffix, dumps, kpt_suffix, sample_key, timeline_to_json

from .encode import EncodeSettings, EntryFailed, encode_chunks, view_encode
from .errors import SourceError
from .keypoints import Schema, list_keypoints, stack_chunk
from .media import Entries
from .plan import chunk_plan, clip_timeline
from .source import VideoSpec
from .spool import fragment_name, write_fragment
from .store import open_store


MAX_MEMBER_BYTES = Limits().max_member_bytes  # the reader's default (limits.py checks the rest before writing)


@dataclasses.dataclass(frozen=True, kw_only=True)
class RunTask:
    spec: VideoSpec
    max_video_frames: int | None
    overlap: int
    encode: EncodeSettings
    keypoint_schema: Schema
    keypoint_origin: dict[str, str]
    work: str  # URL or folder of the work store (the spool is under it)
    first: int  # the run: chunks [first, stop) of the video's chunk_plan
    stop: int


@dataclasses.dataclass(frozen=True, kw_only=True)
class ChunkRecord:
    key: str
    chunk_index: int
    start: int
    end: int
    nsegments: int
    size: int  # bytes of the sample's tar records, as spooled (headers included)
    segments: list[list]  # [label, frames] of each of its timeline segments: index.json's `segments`


@dataclasses.dataclass(frozen=True, kw_only=True)
class RunResult:
    video_id: str
    first: int
    stop: int
    chunks: list[ChunkRecord]
    notes: list[str]  # for the driver's log: views decoded from their start although the run starts later

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> RunResult:
        return cls(**{**obj, "chunks": [ChunkRecord(**c) for c in obj["chunks"]]})


RUNS = "runs"
_RUN_RECORD = re.compile(r"([A-Za-z0-9_-]+)\.(\d+)-(\d+)\.json")


def result_name(video_id: str, first: int, stop: int) -> str:
    return f"{RUNS}/{video_id}.{first}-{stop}.json"


def finished_runs(work) -> list[RunResult]:
    """The records of every run finished in the work store (a resumed job's starting point)."""
    return [RunResult.from_json(json.loads(work.read(f"{RUNS}/{name}")))
            for name in work.listing(RUNS) if _RUN_RECORD.fullmatch(name)]


def run_encode_task(task: RunTask) -> RunResult:
    work = open_store(task.work)
    name = result_name(task.spec.video_id, task.first, task.stop)
    if work.exists(name):  # finished by an earlier attempt (a retried task)
        return RunResult.from_json(json.loads(work.read(name)))
    spec = task.spec
    chunks = chunk_plan(spec.num_frames, task.max_video_frames, task.overlap)
    whole = task.first == 0 and task.stop == len(chunks)
    # A whole video is decoded from its start, as one task always did: nothing to enter, nothing to check against.
    entries = [Entries()] * len(spec.views) if whole or not spec.entries else list(spec.entries)
    start = chunks[task.first][0]
    notes = [f"{path}: cannot be entered mid-file ({e.why_not}); decoded from its start to frame {start}"
             for path, e in zip(spec.paths, entries) if start and e.why_not]  # (a resumed video planned as one task)
    while True:
        try:
            with tempfile.TemporaryDirectory(prefix="vidshard-clips-") as tmp:
                chunks = _write_samples(task, tuple(entries), tmp, work, notes)
            break
        except EntryFailed as failed:  # that view from its start, then; the fragments spooled are rewritten
            notes.append(f"{spec.paths[failed.view]}: cannot be entered at a keyframe: its frame count disagreed "
                         f"({failed}); decoded from its start")
            entries[failed.view] = Entries(why_not=str(failed))
    result = RunResult(video_id=spec.video_id, first=task.first, stop=task.stop, chunks=chunks, notes=notes)
    work.write(name, dumps(result.to_json()))
    return result


def _write_samples(task: RunTask, entries: tuple[Entries, ...], tmp: str, work, notes: list[str]) -> list[ChunkRecord]:
    spec = task.spec
    chunks = chunk_plan(spec.num_frames, task.max_video_frames, task.overlap)
    run = range(task.first, task.stop)
    keys = [sample_key(spec.video_id, i) for i in run]
    views = []
    for path, source in zip(spec.paths, spec.sources):
        try:
            views.append(view_encode(path, source, task.encode))
        except ValueError as exc:
            raise SourceError(spec.video_id, path, str(exc)) from None
    clip_paths = [[os.path.join(tmp, f"{k}.{clip_suffix(v)}") for v in spec.views] for k in keys]
    lo, hi = chunks[task.first][0], chunks[task.stop - 1][1]
    keypoint_files = [list_keypoints(spec.video_id, d, n, frames=range(lo, hi)) if d else {}
                      for d, n in zip(spec.keypoint_dirs, spec.view_frames)]  # the run's only: its memory is its run's
    records = []

    def spool(r: int) -> None:  # chunk `first + r` is encoded: spool it now, free the worker's disk
        index, key = task.first + r, keys[r]
        start, end = chunks[index]
        segments = clip_timeline(spec.timeline, start, end)
        members: dict[str, bytes | str] = {TIMELINE: dumps(timeline_to_json(segments))}
        coverage = {}
        if task.keypoint_schema:
            for view, files in zip(spec.views, keypoint_files):
                members[kpt_suffix(view)], coverage[view] = stack_chunk(
                    spec.video_id, files, start, end, task.keypoint_schema, task.keypoint_origin
                )
        members[META] = dumps(chunk_meta(spec, task.encode, task.keypoint_schema, index, len(chunks), start, end, views,
                                         coverage))
        for view, path, source in zip(spec.views, clip_paths[r], spec.paths):
            members[clip_suffix(view)] = path
            # Known only once encoded: a clip the reader would refuse (Limits.max_member_bytes)
            # stops the video here, before its sample is spooled and long before index.json.
            if os.path.getsize(path) > MAX_MEMBER_BYTES:
                raise SourceError(spec.video_id, source, f"the clip of frames [{start}, {end}) takes {os.path.getsize(path)} "
                                                         f"bytes, over the reader's limit of {MAX_MEMBER_BYTES} "
                                                         "(Limits.max_member_bytes): lower --max-video-frames or --resize")
        with work.create(fragment_name(key)) as f:
            size = write_fragment(f, key, members.items())
        for path in clip_paths[r]:
            os.remove(path)
        records.append(ChunkRecord(key=key, chunk_index=index, start=start, end=end, nsegments=len(segments), size=size,
                                   segments=[[s.label, s.end - s.start] for s in segments]))

    encode_chunks(spec.video_id, views, spec.fps, task.encode.resize is not None, chunks[task.first:task.stop],
                  clip_paths, task.encode, spec.view_frames, entries, finished=spool, notes=notes)
    return records


def chunk_meta(spec: VideoSpec, encode: EncodeSettings, schema: Schema, index: int, num_chunks: int, start: int, end: int,
               views: list, coverage: dict) -> dict:
    """A chunk's meta.json (limits.py sizes it before anything is written)."""
    meta = {
        "key": sample_key(spec.video_id, index),
        "video_id": spec.video_id,
        "chunk_index": index,
        "num_chunks": num_chunks,
        "start_frame": start,
        "end_frame": end,
        "num_frames": end - start,
        "video_frames": spec.num_frames,
        "fps": float(spec.fps),
        "fps_rational": f"{spec.fps.numerator}/{spec.fps.denominator}",
        "views": list(spec.views),
        "view_sizes": {v: {"width": e.size[0], "height": e.size[1]} for v, e in zip(spec.views, views)},
        "view_colour": {v: e.colour.describe() for v, e in zip(spec.views, views)},
        "view_source": {v: s.describe() for v, s in zip(spec.views, spec.sources)},
        "view_clip": {v: e.describe() for v, e in zip(spec.views, views)},  # the clip's aspect ratio and field order
        "autorotate": encode.autorotate,
        "gop": encode.gop,
        "keypoints": sorted({n.partition(".")[0] for n in schema}),
        "keypoint_frames": coverage,  # per view: frames of the chunk that have keypoints
        "annotation": spec.annotation,
    }
    if len(set(spec.view_frames)) > 1:
        meta["source_view_frames"] = dict(zip(spec.views, spec.view_frames))
    return meta
