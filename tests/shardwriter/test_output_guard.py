"""OUTPUT belongs to one SOURCE and one writer (issue 22, points 7 and 8)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import pytest

from shardwriter.errors import WriterError
from shardwriter.fingerprint import SOURCE_NAME
from shardwriter.lock import LOCK_NAME

from ..helpers import write
from .test_writer_resume import Stop, StopAfterFirstShard, digests

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def other_source(source_copy: str) -> str:
    """Source B: A with one video's annotation rewritten and one video gone."""
    path = os.path.join(source_copy, "annotations", "session_001.json")
    annotation = json.load(open(path))
    annotation["operator"] = "someone else"
    json.dump(annotation, open(path, "w"))
    os.rename(os.path.join(source_copy, "videos", "session_002"), os.path.join(source_copy, "videos", "session_009"))
    os.rename(os.path.join(source_copy, "annotations", "session_002.json"),
              os.path.join(source_copy, "annotations", "session_009.json"))
    return source_copy


def test_another_source_into_a_finished_output_is_refused_naming_the_difference(small_source, small_dataset, source_copy):
    before = digests(small_dataset)
    write(small_source, small_dataset, overlap=6)  # the same SOURCE: complete already
    b = other_source(source_copy)
    with pytest.raises(WriterError) as info:
        write(b, small_dataset, overlap=6)
    message = str(info.value)
    assert "a finished dataset written from another SOURCE" in message, message
    assert "only in this SOURCE: session_009" in message and "only in the source it was written from: session_002" in message
    assert "differ (names, sizes or modification times): session_001" in message, message
    assert digests(small_dataset) == before and os.path.exists(os.path.join(small_dataset, SOURCE_NAME))


def test_another_source_into_an_unfinished_output_is_refused(small_source, small_dataset, source_copy, tmp_path):
    out = str(tmp_path / "out")
    with pytest.raises(Stop):
        write(small_source, out, overlap=6, engine=StopAfterFirstShard)
    with pytest.raises(WriterError) as info:
        write(other_source(source_copy), out, overlap=6)
    assert "an unfinished run written from another SOURCE" in str(info.value) and "session_009" in str(info.value)
    write(small_source, out, overlap=6)  # the SOURCE it was begun from resumes it
    assert digests(out) == digests(small_dataset)


def test_a_copy_with_its_times_kept_is_the_same_source(small_source, small_dataset, source_copy):
    write(source_copy, small_dataset, overlap=6)  # shutil.copytree keeps modification times


def test_a_second_writer_stops_at_once_naming_the_first(small_source, tmp_path):
    out = str(tmp_path / "out")
    first = subprocess.Popen([sys.executable, "-m", "vidshard", "-q", "write", small_source, out, "--max-video-frames", "30",
                              "--shard-size", "150000", "--gop", "8", "--overlap", "6"],
                             env={**os.environ, "PYTHONPATH": ROOT}, cwd=ROOT, stderr=subprocess.PIPE, text=True)
    lock = os.path.join(out, LOCK_NAME)
    deadline = time.monotonic() + 30
    while not os.path.exists(lock) and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert os.path.exists(lock), "the first writer never took the lock"
    started = time.monotonic()
    with pytest.raises(WriterError) as info:
        write(small_source, out, overlap=6)
    assert time.monotonic() - started < 5  # at once, not after probing
    message = str(info.value)
    assert f"host {socket.gethostname()}, pid {first.pid}, started " in message and LOCK_NAME in message, message
    assert first.wait(120) == 0, first.stderr.read()
    assert os.path.exists(os.path.join(out, "index.json")) and not os.path.exists(lock)
    assert not os.path.exists(os.path.join(out, ".vidshard-work"))  # the second writer left no work files


def test_a_stale_lock_of_a_dead_writer_on_this_host_is_replaced(small_source, small_dataset, tmp_path, caplog):
    out = str(tmp_path / "out")
    dead = subprocess.Popen(["true"])
    dead.wait()
    os.makedirs(out)
    with open(os.path.join(out, LOCK_NAME), "w") as f:
        json.dump({"host": socket.gethostname(), "pid": dead.pid, "started": "2026-01-01T00:00:00+00:00", "token": "x"}, f)
    write(small_source, out, overlap=6)
    assert digests(out) == digests(small_dataset) and not os.path.exists(os.path.join(out, LOCK_NAME))
    assert any(f"pid {dead.pid}" in r.getMessage() and "no longer runs" in r.getMessage() for r in caplog.records)


def test_a_lock_from_another_host_is_never_taken_over(small_source, tmp_path):
    out = str(tmp_path / "out")
    os.makedirs(out)
    with open(os.path.join(out, LOCK_NAME), "w") as f:
        json.dump({"host": "render-07", "pid": 4242, "started": "2026-01-01T00:00:00+00:00", "token": "x"}, f)
    with pytest.raises(WriterError, match=r"host render-07, pid 4242, started 2026-01-01.*delete .*\.vidshard-lock"):
        write(small_source, out, overlap=6)


def test_object_storage_is_locked_the_same_way(small_source, s3_server):
    from shardwriter.store import open_store

    from ..servers import use_endpoint

    use_endpoint(s3_server)
    store = open_store("s3://vidshard/locked")
    store.write(LOCK_NAME, json.dumps({"host": "render-07", "pid": 4242, "started": "2026-01-01T00:00:00+00:00",
                                       "token": "x"}).encode())
    with pytest.raises(WriterError, match=r"host render-07, pid 4242.*delete s3://vidshard/locked/\.vidshard-lock"):
        write(small_source, "s3://vidshard/locked", overlap=6)
    assert store.listing() == []  # nothing written
    store.delete(LOCK_NAME)
    write(small_source, "s3://vidshard/locked", overlap=6)
    assert not store.exists(LOCK_NAME) and store.exists("index.json") and store.exists(SOURCE_NAME)
