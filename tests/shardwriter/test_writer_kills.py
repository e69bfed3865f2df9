"""The writer survives 20 SIGKILLs, and 10 of run-split tasks (the resumed output is byte-identical), and a full disk."""

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

from shardwriter.errors import WriterError

from ..helpers import write
from .test_writer_resume import digests


@pytest.mark.parametrize("kills, runs", [(20, []), (10, ["--run-frames", "1"])])
def test_sigkills_then_resume_is_byte_identical(small_source, small_dataset, tmp_path, kills, runs):
    """20 kills of whole-video tasks; 10 of run-split ones (entered mid-file), every other
    attempt cutting the chunks not done into runs of another length (1 chunk, or about 45 frames)."""
    out = str(tmp_path / "killed")
    cmd = [sys.executable, "-m", "vidshard", "-q", "write", small_source, out, "--max-video-frames", "30",
           "--overlap", "6", "--shard-size", "150000", "--gop", "8", "--workers", "2", *runs]
    began = time.monotonic()
    assert subprocess.run([*cmd[:6], str(tmp_path / "timing"), *cmd[7:]], capture_output=True).returncode == 0
    duration = time.monotonic() - began
    rng = random.Random(20)
    interrupted = attempts = 0
    while interrupted < kills and attempts < 4 * kills:
        attempts += 1
        attempt = cmd[:-1] + ["45"] if runs and attempts % 2 else cmd
        proc = subprocess.Popen(attempt, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        time.sleep(duration * rng.uniform(0.3, 0.8))
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        if os.path.exists(os.path.join(out, "index.json")):
            shutil.rmtree(out)  # finished before the kill: start over, the kills must land mid-run
            continue
        if os.path.isdir(out):
            interrupted += 1
            assert not [n for n in os.listdir(out) if n.endswith(".tar") and not n.startswith("shard-")]
    assert interrupted >= kills
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
