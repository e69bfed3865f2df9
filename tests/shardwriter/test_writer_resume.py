"""Same input + config -> the same bytes, however the job ran: serial, parallel, or killed
with SIGKILL and resumed."""

from __future__ import annotations

import hashlib
import json
import os

import pytest

from shardwriter.engine import LocalEngine
from shardwriter.errors import WriterError
from streaming.format import ShardEntry

from ..helpers import write


def digests(out: str) -> dict[str, str]:
    return {
        name: hashlib.sha256(open(os.path.join(out, name), "rb").read()).hexdigest()
        for name in sorted(os.listdir(out))
    }


def test_reruns_and_worker_counts_give_identical_bytes(small_source, small_dataset, tmp_path):
    again = str(tmp_path / "again")
    parallel = str(tmp_path / "parallel")
    write(small_source, again, overlap=6)
    write(small_source, parallel, overlap=6, workers=2)
    assert digests(again) == digests(small_dataset) == digests(parallel)
    assert not os.path.exists(os.path.join(again, ".vidshard-work"))


def test_seed_changes_only_the_order(small_source, small_dataset, tmp_path):
    other = str(tmp_path / "other")
    write(small_source, other, overlap=6, seed=7)
    assert digests(other)["index.json"] != digests(small_dataset)["index.json"]


def test_finished_output_is_kept_or_refused(small_source, small_dataset):
    before = digests(small_dataset)
    report = write(small_source, small_dataset, overlap=6)  # same settings: nothing to do
    assert report.chunks == 9 and digests(small_dataset) == before
    with pytest.raises(WriterError, match="other settings"):
        write(small_source, small_dataset, overlap=5)


def test_unrelated_output_is_refused(small_source, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(WriterError, match="not empty"):
        write(small_source, str(tmp_path))


# SIGKILL at 20 random points, then resume: tests/shardwriter/test_writer_kills.py


class Stop(Exception):
    pass


class StopAfterFirstShard:
    """The local engine, interrupted (as by a kill of the driver) once the first shard is published."""

    def __init__(self, workers):
        self.inner = LocalEngine(workers)
        self.parallelism = self.inner.parallelism

    def submit(self, fn, task):
        return self.inner.submit(fn, task)

    def wait(self, handles):
        done = self.inner.wait(handles)
        if any(isinstance(outcome, ShardEntry) for _, outcome in done):
            raise Stop
        return done

    def close(self):
        self.inner.close()


def test_plan_is_saved_first_and_a_changed_source_is_refused(source_copy, small_dataset, tmp_path):
    out = str(tmp_path / "out")
    with pytest.raises(Stop):
        write(source_copy, out, overlap=6, engine=StopAfterFirstShard)
    plan = json.load(open(os.path.join(out, ".vidshard-work", "plan.json")))
    published = sorted(n for n in os.listdir(out) if n.endswith(".tar"))
    assert published and len(plan["order"]) == 9 and len(plan["videos"]) == 3
    with open(os.path.join(source_copy, "annotations", "session_001.json"), "a") as f:
        f.write(" ")  # any change to a source file, even one that keeps every frame count
    # Found from the listing (fingerprint.py) before any video is probed; the saved plan's
    # per-video fingerprints (schedule.check_plan) are the second line of defence.
    with pytest.raises(WriterError, match=r"unfinished run written from another SOURCE \(videos whose files differ.*session_001"):
        write(source_copy, out, overlap=6)
    assert sorted(n for n in os.listdir(out) if n.endswith(".tar")) == published  # nothing touched


def test_interrupted_run_resumes_from_its_plan(small_source, small_dataset, tmp_path):
    out = str(tmp_path / "out")
    with pytest.raises(Stop):
        write(small_source, out, overlap=6, engine=StopAfterFirstShard)
    write(small_source, out, overlap=6, workers=2)
    assert digests(out) == digests(small_dataset)


def test_a_shard_record_with_other_samples_is_refused(small_source, small_dataset, tmp_path):
    """A resumed run keeps a published shard only if it holds exactly the samples this run
    puts in it (never a shard whose name merely exists)."""
    out = str(tmp_path / "out")
    with pytest.raises(Stop):
        write(small_source, out, overlap=6, engine=StopAfterFirstShard)
    record = os.path.join(out, ".vidshard-work", "shards", "shard-000000.tar.json")
    entry = json.load(open(record))
    assert entry["nsamples"] >= 2
    entry["samples"] = entry["samples"][:-1]  # as a run that cut its first shard one sample earlier
    json.dump(entry, open(record, "w"))
    with pytest.raises(WriterError, match="shard-000000.tar from an earlier run lists other samples"):
        write(small_source, out, overlap=6)


def test_a_work_area_without_job_json_is_not_trusted(small_source, tmp_path):
    """A run killed while it discarded its work (on_error fail, or a clean-up) can leave
    encode records and spooled samples without job.json. A new run, maybe with other
    settings, starts from nothing: it never takes those for its own."""
    from shardwriter.encode import EncodeSettings

    out, clean = str(tmp_path / "out"), str(tmp_path / "clean")
    with pytest.raises(Stop):
        write(small_source, out, overlap=6, engine=StopAfterFirstShard)
    for name in os.listdir(out):
        if name.endswith(".tar"):
            os.remove(os.path.join(out, name))
    os.remove(os.path.join(out, ".vidshard-work", "job.json"))  # half discarded
    assert os.listdir(os.path.join(out, ".vidshard-work", "runs"))
    write(small_source, out, overlap=6, encode=EncodeSettings(gop=4))  # the same keys, other bytes
    write(small_source, clean, overlap=6, encode=EncodeSettings(gop=4))
    assert digests(out) == digests(clean)


def test_a_work_dir_given_is_a_parent_the_writer_does_not_empty(small_source, small_dataset, tmp_path):
    """--work-dir names where the work area goes, not a folder to take over: the writer deletes
    its work area when it finishes (and on a fresh start), never the folder's other files."""
    from shardwriter.encode import EncodeSettings
    from shardwriter.job import WriteConfig, write_dataset

    scratch = tmp_path / "scratch"
    scratch.mkdir()
    (scratch / "mine.txt").write_text("not the writer's")
    out = str(tmp_path / "out")
    config = WriteConfig(max_video_frames=30, overlap=6, shard_bytes=150_000, encode=EncodeSettings(gop=8))
    write_dataset(small_source, out, config, work_dir=str(scratch))
    assert digests(out) == digests(small_dataset)
    assert os.listdir(scratch) == ["mine.txt"]


def test_a_run_begun_by_another_build_is_not_resumed(small_source, tmp_path):
    """job.json records the encoder as it ran (libraries, CPU code paths) and the format
    version: a run begun by another FFmpeg build would mix two kinds of clips in one OUTPUT."""
    from shardwriter.errors import WriterError

    out = str(tmp_path / "out")
    with pytest.raises(Stop):
        write(small_source, out, overlap=6, engine=StopAfterFirstShard)
    path = os.path.join(out, ".vidshard-work", "job.json")
    job = json.load(open(path))
    assert job["encoder"]["x264_avx512"] is False and job["format_version"] == 1
    job["encoder"]["libavcodec"] = "60.0.0"
    open(path, "w").write(json.dumps(job, sort_keys=True, indent=1, ensure_ascii=False) + "\n")
    with pytest.raises(WriterError, match=r"begun by another vidshard or FFmpeg build .*job.json"):
        write(small_source, out, overlap=6)
