"""The driver holds metadata only, and little of it per sample: the real driver (probe
results in, plan, schedule, index.json out) runs with tasks faked in-process, at a scale
where media bytes are absent by construction, and its Python heap is measured."""

from __future__ import annotations

import hashlib
import json
import os
import tracemalloc
from fractions import Fraction

from shardwriter.assemble import ShardTask
from shardwriter.config import WriteConfig
from shardwriter.display import Colour
from shardwriter.job import _run
from shardwriter.plan import SourceSegment, chunk_plan
from shardwriter.probe import ProbeResult, ProbeTask
from shardwriter.source import VideoSpec, ViewSource
from shardwriter.store import open_store
from shardwriter.task import ChunkRecord, RunResult
from streaming.format import SampleEntry, ShardEntry, sample_key

VIEWS = ("front", "left", "right")
FRAMES, CHUNKS = 1000, 20


def _spec(video_id: str) -> VideoSpec:
    src = ViewSource(codec="h264", pix_fmt="yuv420p", bit_depth=8, width=1920, height=1080, matrix=None, colour=Colour(),
                     yuv=True)
    return VideoSpec(video_id=video_id, views=VIEWS, paths=tuple(f"/mnt/src/videos/{video_id}/{v}.mp4" for v in VIEWS),
                     num_frames=FRAMES * CHUNKS, view_frames=(FRAMES * CHUNKS,) * 3, fps=Fraction(30), sources=(src,) * 3,
                     timeline=tuple(SourceSegment(start=j * 4000, end=(j + 1) * 4000, label="walk") for j in range(5)),
                     annotation={"scene": "street"}, keypoint_dirs=(None,) * 3)


def _outcome(task):
    """What each task would return: probe results, encode results, shard entries."""
    if isinstance(task, ProbeTask):
        return ProbeResult(spec=_spec(task.video_id), schema={}, origin={},
                           fingerprint=hashlib.sha256(task.video_id.encode()).hexdigest())
    if isinstance(task, ShardTask):
        offset, samples = 0, []
        for s in task.samples:
            samples.append(SampleEntry(key=s.key, offset=offset, size=s.size, nframes=s.nframes, nsegments=s.nsegments,
                                       segments=s.segments))
            offset += s.size
        return ShardEntry(url=task.name, nsamples=len(samples), nsegments=len(samples), nframes=sum(s.nframes for s in samples),
                          filesize=offset + 1024, sha256=hashlib.sha256(task.name.encode()).hexdigest(), samples=samples)
    spec = task.spec
    return RunResult(video_id=spec.video_id, first=task.first, stop=task.stop, notes=[], chunks=[
        ChunkRecord(key=sample_key(spec.video_id, c), chunk_index=c, start=a, end=b, nsegments=1, size=50_000_000 + c,
                    segments=[["walk", b - a]])
        for c, (a, b) in enumerate(chunk_plan(spec.num_frames, FRAMES)) if task.first <= c < task.stop])


class Inline:
    parallelism = 8

    def __init__(self):
        self.done = []

    def submit(self, fn, task):
        handle = object()
        self.done.append((handle, _outcome(task)))
        return handle

    def wait(self, handles):
        done, self.done = self.done, []
        return done

    def close(self):
        pass


def test_the_driver_holds_about_a_kilobyte_per_sample(tmp_path):
    out, work = str(tmp_path / "out"), str(tmp_path / "out" / ".vidshard-work")
    videos = [f"session_{i:06d}" for i in range(600)]
    config = WriteConfig(max_video_frames=FRAMES, shard_bytes=1 << 30)
    tracemalloc.start()
    try:
        report = _run(Inline(), "/mnt/src", out, work, open_store(out), open_store(work), config, videos, VIEWS, {})
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    samples = len(videos) * CHUNKS
    index = os.path.getsize(os.path.join(out, "index.json"))
    assert report.chunks == samples and json.load(open(os.path.join(out, "index.json")))["totals"]["chunks"] == samples
    print(f"{peak / samples:.0f} bytes of Python heap per sample at peak; index.json {index / samples:.0f} bytes per sample")
    # 2200 while index.json was built as one string; 1050 before index.json listed each
    # sample's segment labels (issue 17), ~1470 with one segment per sample since.
    assert peak < 1600 * samples
