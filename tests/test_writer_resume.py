"""Same input + config -> the same bytes, however the job ran: serial, parallel, or killed
with SIGKILL and resumed."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time

import pytest

from shardwriter.errors import WriterError

from .helpers import write


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


def test_sigkill_at_many_points_then_resume_is_byte_identical(small_source, small_dataset, tmp_path):
    out = str(tmp_path / "killed")
    cmd = [sys.executable, "-m", "shardwriter.cli", "-q", "write", small_source, out,
           "--max-video-frames", "30", "--overlap", "6", "--shard-size", "150000", "--gop", "8", "--workers", "2"]
    began = time.monotonic()
    full = subprocess.run([*cmd[:6], str(tmp_path / "timing"), *cmd[7:]], capture_output=True)
    assert full.returncode == 0, full.stderr
    duration = time.monotonic() - began
    interrupted = 0
    # Kill points spread over the run; each re-run resumes what the last one left.
    for fraction in (0.35, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.9):
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        time.sleep(duration * fraction)
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and its pool workers, mid-write
        proc.wait()
        if not os.path.isdir(out):
            continue  # killed before it started
        if os.path.exists(os.path.join(out, "index.json")):
            break
        interrupted += 1
        # Whatever the kill left, nothing partial is visible under a final shard name.
        for name in os.listdir(out):
            if name.endswith(".tar"):
                assert name.startswith("shard-")
    assert interrupted >= 3
    assert subprocess.run(cmd, capture_output=True).returncode == 0
    assert digests(out) == digests(small_dataset)
