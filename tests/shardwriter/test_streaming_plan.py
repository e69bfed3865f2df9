"""Shards are written while later videos are still being encoded, so the spool (in OUTPUT's own
store) holds about a group of videos, never the whole dataset; --shard-size is kept by the
driver's cut from the samples' real sizes."""

from __future__ import annotations

import json
import os

import pytest

from shardwriter.engine import LocalEngine
from streaming.format import ShardEntry
from vidshard.synth import synth_source

from ..helpers import write


class Watching:
    """The local engine, noting after every finished task the spool's bytes and what is done."""

    def __init__(self, workers, spool: str, log: list):
        self.inner, self.spool, self.log = LocalEngine(workers), spool, log
        self.parallelism = self.inner.parallelism

    def submit(self, fn, task):
        return self.inner.submit(fn, task)

    def wait(self, handles):
        done = self.inner.wait(handles)
        spooled = sum(_size(e) for e in os.scandir(self.spool)) if os.path.isdir(self.spool) else 0
        for _, outcome in done:
            kind = "shard" if isinstance(outcome, ShardEntry) else "video" if hasattr(outcome, "chunks") else "probe"
            self.log.append((kind, spooled))
        return done

    def close(self):
        self.inner.close()


def _size(entry: os.DirEntry) -> int:
    try:
        return entry.stat().st_size
    except FileNotFoundError:  # a shard task removed it after the listing: it holds nothing now
        return 0


@pytest.fixture(scope="module")
def many_videos(tmp_path_factory) -> str:
    root = str(tmp_path_factory.mktemp("many") / "src")
    synth_source(root, videos=8, frames=40, views=("front", "left"), size=(64, 48), seed=5, keypoints=False)
    return root


def test_shards_stream_out_and_the_spool_stays_small(many_videos, tmp_path):
    out = str(tmp_path / "out")
    log: list = []
    report = write(many_videos, out, max_video_frames=16, shard_bytes=40_000, mix_videos=2,
                   engine=lambda workers: Watching(1, os.path.join(out, ".vidshard-work", "spool"), log))
    kinds = [k for k, _ in log]
    last_video = len(kinds) - 1 - kinds[::-1].index("video")
    assert "shard" in kinds[:last_video]  # shards published before the last video was encoded
    assert max(s for _, s in log) < report.bytes / 2  # one group (1/4 of the videos) and one video ahead
    index = json.load(open(os.path.join(out, "index.json")))
    videos_per_shard = [len({s["key"].rsplit("_", 1)[0] for s in sh["samples"]}) for sh in index["shardlist"]]
    assert max(videos_per_shard) <= 2 * 2  # a group's videos, or two groups' at a boundary
    assert max(sh["filesize"] for sh in index["shardlist"]) <= 40_000  # --shard-size kept: shards are cut from real sizes


def test_an_encode_task_spools_each_chunk_as_soon_as_it_is_encoded(small_source, tmp_path, monkeypatch):
    """A worker's disk holds the clips of the chunks being encoded, not the whole video's."""
    import shardwriter.task as encode_task
    from shardwriter.encode import EncodeSettings
    from shardwriter.probe import ProbeTask, run_probe_task

    probe = run_probe_task(ProbeTask(source=small_source, video_id="session_000", views=("front", "left", "right"),
                                     truncate_views=False, encode=EncodeSettings(gop=8)))
    on_disk = []
    original = encode_task.write_fragment

    def watching(out, key, members):
        members = list(members)
        folder = os.path.dirname(next(p for _, p in members if isinstance(p, str)))
        on_disk.append(len([n for n in os.listdir(folder) if n.endswith(".mp4")]))
        return original(out, key, members)

    monkeypatch.setattr(encode_task, "write_fragment", watching)
    result = encode_task.run_encode_task(encode_task.RunTask(
        spec=probe.spec, max_video_frames=20, overlap=4, encode=EncodeSettings(gop=8), keypoint_schema=probe.schema,
        keypoint_origin=probe.origin, work=str(tmp_path / "work"), first=0, stop=5))
    assert len(result.chunks) == 5 and len(on_disk) == 5
    assert max(on_disk) <= 2 * 3  # the finished chunk's 3 clips and the next chunk's, already open (overlap)


@pytest.fixture(scope="module")
def quiet_then_busy(tmp_path_factory) -> str:
    """Videos whose first GOPs are nearly static and the rest heavy grain, as a recording that
    starts on a still scene (a covered lens, a parked car) and then moves: the first GOP says
    little about the bytes of the rest."""
    import subprocess

    root = str(tmp_path_factory.mktemp("quiet") / "src")
    synth_source(root, videos=3, frames=64, views=("front", "left"), size=(64, 48), seed=6, keypoints=False)
    for vid in sorted(os.listdir(os.path.join(root, "videos"))):
        for name in os.listdir(os.path.join(root, "videos", vid)):
            path = os.path.join(root, "videos", vid, name)
            subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", path, "-vf", "noise=alls=60:allf=t:enable='gte(n,16)'",
                            "-c:v", "libx264", "-threads", "1", path + ".mp4"], check=True)
            os.replace(path + ".mp4", path)
    return root


def test_shard_size_is_kept_whatever_the_first_gop_says(quiet_then_busy, tmp_path):
    """Shards are cut from the samples' real sizes: each shard is the greedy packing of its
    samples in order (closed when the next sample would take it past --shard-size), so no
    shard of two or more samples is larger than --shard-size, whatever the source's bitrate
    does over time."""
    from .test_plan import plan_shards

    out = str(tmp_path / "out")
    limit = 300_000
    write(quiet_then_busy, out, max_video_frames=16, shard_bytes=limit, mix_videos=2)
    index = json.load(open(os.path.join(out, "index.json")))
    sizes = [s["size"] for sh in index["shardlist"] for s in sh["samples"]]
    assert max(sizes) < limit / 2  # every shard could hold two samples or more
    cut = [len(r) for r in plan_shards(sizes, limit)]
    assert [sh["nsamples"] for sh in index["shardlist"]] == cut, (cut, [sh["filesize"] for sh in index["shardlist"]])
    assert max(sh["filesize"] for sh in index["shardlist"]) <= limit
