"""Mutated shards never crash or hang the reader (only typed errors come out); the writer
survives 20 SIGKILLs and a full disk."""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import tarfile
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shardwriter.errors import WriterError
from shardwriter.synth import synth_source
from streaming import VideoShardDataset
from streaming.errors import SampleError

from .helpers import write
from .test_writer_resume import digests


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    synth_source(str(root / "src"), videos=1, frames=24, views=("front", "left"), size=(32, 32), seed=2)
    write(str(root / "src"), str(root / "ds"), max_video_frames=12, shard_bytes=10**6)
    return str(root / "ds")


mutations = st.one_of(
    st.tuples(st.just("flip"), st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 7)), min_size=1, max_size=8)),
    st.tuples(st.just("truncate"), st.integers(0, 10**6)),
    st.tuples(st.just("insert"), st.tuples(st.integers(0, 10**6), st.binary(min_size=1, max_size=600))),
)


def mutate(raw: bytes, mutation) -> bytes:
    kind, arg = mutation
    data = bytearray(raw)
    if kind == "flip":
        for pos, bit in arg:
            data[pos % len(data)] ^= 1 << bit
    elif kind == "truncate":
        del data[arg % len(data):]
    else:
        pos, blob = arg
        data[pos % len(data):pos % len(data)] = blob
    return bytes(data)


@given(mutations)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_fuzzed_shard_gives_items_or_typed_errors(tiny_dataset, tmp_path_factory, mutation):
    work = tmp_path_factory.mktemp("fuzz")
    shutil.copy(os.path.join(tiny_dataset, "index.json"), work / "index.json")
    raw = open(os.path.join(tiny_dataset, "shard-000000.tar"), "rb").read()
    (work / "shard-000000.tar").write_bytes(mutate(raw, mutation))

    def alarm(*_):
        raise TimeoutError("reader hung on a mutated shard")

    signal.signal(signal.SIGALRM, alarm)
    signal.alarm(20)
    try:
        for mode in ("chunk", "segment"):
            try:
                for item in VideoShardDataset(str(work), sample=mode, num_frames=3 if mode == "segment" else None, load_kpt=True):
                    assert item["video"].shape[1] == len(item["frame_index"]) == len(item["frame_labels"])
            except SampleError:
                pass  # typed, with shard and key: what a mutated shard may give
    finally:
        signal.alarm(0)


def test_twenty_sigkills_then_resume_is_byte_identical(small_source, small_dataset, tmp_path):
    out = str(tmp_path / "killed")
    cmd = [sys.executable, "-m", "shardwriter.cli", "-q", "write", small_source, out, "--max-video-frames", "30",
           "--overlap", "6", "--shard-size", "150000", "--gop", "8", "--workers", "2"]
    began = time.monotonic()
    assert subprocess.run([*cmd[:6], str(tmp_path / "timing"), *cmd[7:]], capture_output=True).returncode == 0
    duration = time.monotonic() - began
    rng = random.Random(20)
    interrupted = attempts = 0
    while interrupted < 20 and attempts < 80:
        attempts += 1
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        time.sleep(duration * rng.uniform(0.3, 0.8))
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        if os.path.exists(os.path.join(out, "index.json")):
            shutil.rmtree(out)  # finished before the kill: start over, the kills must land mid-run
            continue
        if os.path.isdir(out):
            interrupted += 1
            assert not [n for n in os.listdir(out) if n.endswith(".tar") and not n.startswith("shard-")]
    assert interrupted >= 20
    assert subprocess.run(cmd, capture_output=True).returncode == 0
    assert digests(out) == digests(small_dataset)


def test_full_disk_is_a_clear_error_and_nothing_partial_is_listed(small_source, tmp_path):
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs as root)")
    mnt = tmp_path / "small"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)], check=True)
    try:
        out = str(mnt / "out")
        with pytest.raises(WriterError, match="no space left on the device") as info:
            write(small_source, out)
        assert "re-run the same command to resume" in str(info.value)
        assert not os.path.exists(os.path.join(out, "index.json"))
        for name in os.listdir(out):  # the write was cleaned up; a shard under a final name is whole
            assert not name.endswith(".partial")
            if name.endswith(".tar"):
                with tarfile.open(os.path.join(out, name)) as tar:
                    assert tar.getmembers()
    finally:
        subprocess.run(["umount", str(mnt)], check=True)
