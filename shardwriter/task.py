"""The encode task: one video -> its chunk samples, spooled in OUTPUT's own store.

A task is a plain function of a plain VideoTask, so the local process pool and Ray run the
same code on any node. Clips are encoded into a local temporary folder (mp4's faststart
needs a real file); as soon as a chunk's clips are complete, the chunk sample is written to
the work store as its tar fragment (spool.py) and its clips are deleted, so the worker's
disk holds the clips of the chunks being encoded. `videos/<video_id>.json` (the result) is
written last: a task killed mid-way is simply run again, and its fragments are rewritten
with the same bytes.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from typing import Any

from streaming.format import META, TIMELINE, Limits, clip_suffix, dumps, kpt_suffix, sample_key, timeline_to_json

from .encode import EncodeSettings, encode_chunks, view_encode
from .errors import SourceError
from .keypoints import Schema, list_keypoints, stack_chunk
from .plan import chunk_plan, clip_timeline
from .source import VideoSpec
from .spool import fragment_name, write_fragment
from .store import open_store


MAX_MEMBER_BYTES = Limits().max_member_bytes  # the reader's default (limits.py checks the rest before writing)


@dataclasses.dataclass(frozen=True, kw_only=True)
class VideoTask:
    spec: VideoSpec
    max_video_frames: int | None
    overlap: int
    encode: EncodeSettings
    keypoint_schema: Schema
    keypoint_origin: dict[str, str]
    work: str  # URL or folder of the work store (the spool is under it)


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


def result_name(video_id: str) -> str:
    return f"videos/{video_id}.json"


def run_video_task(task: VideoTask) -> VideoResult:
    work = open_store(task.work)
    name = result_name(task.spec.video_id)
    if work.exists(name):  # finished by an earlier attempt or run
        stored = json.loads(work.read(name))
        # A record without the chunks' segment labels was left by a vidshard from before
        # index.json listed them: the video is encoded again (the same bytes) to get them.
        if all("segments" in c for c in stored["chunks"]):
            return VideoResult.from_json(stored)
    with tempfile.TemporaryDirectory(prefix="vidshard-clips-") as tmp:
        result = _write_samples(task, tmp, work)
    work.write(name, dumps(result.to_json()))
    return result


def _write_samples(task: VideoTask, tmp: str, work) -> VideoResult:
    spec = task.spec
    chunks = chunk_plan(spec.num_frames, task.max_video_frames, task.overlap)
    keys = [sample_key(spec.video_id, i) for i in range(len(chunks))]
    views = []
    for path, source in zip(spec.paths, spec.sources):
        try:
            views.append(view_encode(path, source, task.encode))
        except ValueError as exc:
            raise SourceError(spec.video_id, path, str(exc)) from None
    clip_paths = [[os.path.join(tmp, f"{k}.{clip_suffix(v)}") for v in spec.views] for k in keys]
    keypoint_files = [
        list_keypoints(spec.video_id, d, n) if d else {} for d, n in zip(spec.keypoint_dirs, spec.view_frames)
    ]
    records = []

    def spool(index: int) -> None:  # chunk `index` is encoded: spool it now, free the worker's disk
        (start, end), key = chunks[index], keys[index]
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
        for view, path, source in zip(spec.views, clip_paths[index], spec.paths):
            members[clip_suffix(view)] = path
            # Known only once encoded: a clip the reader would refuse (Limits.max_member_bytes)
            # stops the video here, before its sample is spooled and long before index.json.
            if os.path.getsize(path) > MAX_MEMBER_BYTES:
                raise SourceError(spec.video_id, source, f"the clip of frames [{start}, {end}) takes {os.path.getsize(path)} "
                                                         f"bytes, over the reader's limit of {MAX_MEMBER_BYTES} "
                                                         "(Limits.max_member_bytes): lower --max-video-frames or --resize")
        with work.create(fragment_name(key)) as f:
            size = write_fragment(f, key, members.items())
        for path in clip_paths[index]:
            os.remove(path)
        records.append(ChunkRecord(key=key, chunk_index=index, start=start, end=end, nsegments=len(segments), size=size,
                                   segments=[[s.label, s.end - s.start] for s in segments]))

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
        finished=spool,
    )
    return VideoResult(
        video_id=spec.video_id,
        num_frames=spec.num_frames,
        fps=f"{spec.fps.numerator}/{spec.fps.denominator}",
        nsegments=len(spec.timeline),
        labels=sorted({s.label for s in spec.timeline}),
        chunks=records,
    )


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
