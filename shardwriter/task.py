"""The per-video task: one source video -> its chunk samples, spooled as member files.

A task is a plain function of a plain VideoTask, so the local process pool and a
distributed engine run the same code. It writes into `<spool>/<video_id>.partial/` and
renames that folder to `<spool>/<video_id>/` once `_done.json` (its result) is inside: a
killed task leaves only a `.partial` folder, which the next run deletes and redoes.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from typing import Any

from streaming.format import META, TIMELINE, clip_suffix, dumps, kpt_suffix, sample_key, timeline_to_json

from .encode import EncodeSettings, encode_chunks, view_encode
from .errors import SourceError
from .keypoints import Schema, list_keypoints, stack_chunk
from .plan import chunk_plan, clip_timeline, tar_member_bytes
from .source import VideoSpec

DONE = "_done.json"


@dataclasses.dataclass(frozen=True, kw_only=True)
class VideoTask:
    spec: VideoSpec
    max_video_frames: int | None
    overlap: int
    encode: EncodeSettings
    keypoint_schema: Schema
    keypoint_origin: dict[str, str]
    spool_dir: str


@dataclasses.dataclass(frozen=True, kw_only=True)
class ChunkRecord:
    key: str
    chunk_index: int
    start: int
    end: int
    nsegments: int
    members: dict[str, int]  # suffix -> byte size

    @property
    def tar_bytes(self) -> int:
        return sum(tar_member_bytes(n) for n in self.members.values())


@dataclasses.dataclass(frozen=True, kw_only=True)
class VideoResult:
    video_id: str
    num_frames: int
    fps: str  # "num/den"
    nsegments: int  # segments of the whole source timeline
    labels: list[str]  # labels used by the source timeline, sorted
    chunks: list[ChunkRecord]

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> VideoResult:
        return cls(**{**obj, "chunks": [ChunkRecord(**c) for c in obj["chunks"]]})


def video_dir(spool_dir: str, video_id: str) -> str:
    return os.path.join(spool_dir, video_id)


def load_result(spool_dir: str, video_id: str) -> VideoResult | None:
    """The result of a task that finished in an earlier run, if any."""
    path = os.path.join(video_dir(spool_dir, video_id), DONE)
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as f:
        return VideoResult.from_json(json.load(f))


def run_video_task(task: VideoTask) -> VideoResult:
    spec = task.spec
    done = load_result(task.spool_dir, spec.video_id)
    if done is not None:
        return done
    final = video_dir(task.spool_dir, spec.video_id)
    partial = final + ".partial"
    shutil.rmtree(partial, ignore_errors=True)
    os.makedirs(partial)
    try:
        result = _write_samples(task, partial)
        _write(os.path.join(partial, DONE), dumps(result.to_json()))
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    os.rename(partial, final)
    return result


def _write(path: str, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)


def _write_samples(task: VideoTask, out: str) -> VideoResult:
    spec = task.spec
    chunks = chunk_plan(spec.num_frames, task.max_video_frames, task.overlap)
    keys = [sample_key(spec.video_id, i) for i in range(len(chunks))]
    views = []
    for path, source in zip(spec.paths, spec.sources):
        try:
            views.append(view_encode(path, source, task.encode))
        except ValueError as exc:
            raise SourceError(spec.video_id, path, str(exc)) from None
    clip_paths = [[os.path.join(out, f"{k}.{clip_suffix(v)}") for v in spec.views] for k in keys]
    encode_chunks(
        spec.video_id,
        views,
        spec.num_frames,
        spec.fps,
        task.encode.resize is not None,
        chunks,
        clip_paths,
        task.encode,
        strict_length=len(set(spec.view_frames)) == 1,
    )
    keypoint_files = [
        list_keypoints(spec.video_id, d, n) if d else {} for d, n in zip(spec.keypoint_dirs, spec.view_frames)
    ]
    records = []
    for index, ((start, end), key) in enumerate(zip(chunks, keys)):
        segments = clip_timeline(spec.timeline, start, end)
        members = {TIMELINE: dumps(timeline_to_json(segments))}
        coverage = {}
        if task.keypoint_schema:
            for view, files in zip(spec.views, keypoint_files):
                members[kpt_suffix(view)], coverage[view] = stack_chunk(
                    spec.video_id, files, start, end, task.keypoint_schema, task.keypoint_origin
                )
        members[META] = dumps(_meta(task, key, index, len(chunks), start, end, views, coverage))
        for suffix, data in members.items():
            _write(os.path.join(out, f"{key}.{suffix}"), data)
        sizes_by_suffix = {suffix: len(data) for suffix, data in members.items()}
        for view in spec.views:
            sizes_by_suffix[clip_suffix(view)] = os.path.getsize(os.path.join(out, f"{key}.{clip_suffix(view)}"))
        records.append(
            ChunkRecord(key=key, chunk_index=index, start=start, end=end, nsegments=len(segments), members=sizes_by_suffix)
        )
    return VideoResult(
        video_id=spec.video_id,
        num_frames=spec.num_frames,
        fps=f"{spec.fps.numerator}/{spec.fps.denominator}",
        nsegments=len(spec.timeline),
        labels=sorted({s.label for s in spec.timeline}),
        chunks=records,
    )


def _meta(task: VideoTask, key: str, index: int, num_chunks: int, start: int, end: int, views: list, coverage: dict) -> dict:
    spec = task.spec
    meta = {
        "key": key,
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
        "autorotate": task.encode.autorotate,
        "gop": task.encode.gop,
        "keypoints": sorted({n.partition(".")[0] for n in task.keypoint_schema}),
        "keypoint_frames": coverage,  # per view: frames of the chunk that have keypoints
        "annotation": spec.annotation,
    }
    if len(set(spec.view_frames)) > 1:
        meta["source_view_frames"] = dict(zip(spec.views, spec.view_frames))
    return meta
