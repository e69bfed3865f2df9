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


def test_a_lock_file_no_writer_holds_is_taken(small_source, small_dataset, tmp_path):
    """A killed writer's lock file (its flock went with it), whatever host or pid it names: taken
    without guessing from pids (a writer in another pid namespace looked dead and lost its lock)."""
    out = str(tmp_path / "out")
    os.makedirs(out)
    with open(os.path.join(out, LOCK_NAME), "w") as f:
        json.dump({"host": "render-07", "pid": 4242, "started": "2026-01-01T00:00:00+00:00", "token": "x"}, f)
    write(small_source, out, overlap=6)
    assert digests(out) == digests(small_dataset) and not os.path.exists(os.path.join(out, LOCK_NAME))


def _hold(out: str, ready, release) -> None:
    from shardwriter.lock import OutputLock
    from shardwriter.store import open_store

    with OutputLock(open_store(out), out):
        ready.set()
        release.wait(30)


def test_a_lock_held_by_a_live_writer_is_never_taken_and_is_free_when_it_exits(small_source, tmp_path):
    """Whatever the lock file says of pids and hosts, a writer that holds its flock keeps
    OUTPUT; once it exits (or dies: the kernel releases it) the next writer proceeds."""
    import multiprocessing

    from shardwriter.lock import OutputLock
    from shardwriter.store import open_store

    out = str(tmp_path / "out")
    ctx = multiprocessing.get_context("fork")
    ready, release = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold, args=(out, ready, release))
    holder.start()
    assert ready.wait(30)
    with pytest.raises(WriterError, match=rf"another vidshard writer \(host {socket.gethostname()}, pid {holder.pid}, started "):
        with OutputLock(open_store(out), out):
            pass
    holder.kill()  # dies holding it
    holder.join()
    with OutputLock(open_store(out), out):
        assert json.load(open(os.path.join(out, LOCK_NAME)))["pid"] == os.getpid()
    assert not os.path.exists(os.path.join(out, LOCK_NAME))


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
