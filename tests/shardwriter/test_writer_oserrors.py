"""OS errors on the way are typed errors naming the file (issue 22, point 5): a read that
fails with EIO, and OUTPUT on a file-size limit (EFBIG), after which the same command
resumes to the same bytes. Symlink loops, folders for files and structured keypoint dtypes
are cases of test_writer_errors.py."""

from __future__ import annotations

import builtins
import errno
import os
import subprocess
import sys

import pytest

from shardwriter.errors import SourceError
from shardwriter.keypoints import load_frame
from shardwriter.source import load_video

from ..helpers import VIEWS

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VID = "session_001"


def failing_open(monkeypatch, path: str) -> None:
    """open() of `path` fails as a dying disk does: EIO, and no file name in the error."""
    real = builtins.open

    def fake(file, *args, **kwargs):
        if os.fspath(file) == path:
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        return real(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", fake)


def test_an_annotation_that_fails_to_read_is_named(source_copy, monkeypatch):
    path = os.path.join(source_copy, "annotations", f"{VID}.json")
    failing_open(monkeypatch, path)
    with pytest.raises(SourceError) as info:
        load_video(source_copy, VID, VIEWS, truncate_views=False)
    assert info.value.path == path and "Input/output error" in info.value.reason, info.value


def test_a_keypoint_file_that_fails_to_read_is_named(source_copy, monkeypatch):
    folder = os.path.join(source_copy, "keypoints", VID, "left")
    path = os.path.join(folder, sorted(os.listdir(folder))[0])
    failing_open(monkeypatch, path)
    with pytest.raises(SourceError) as info:
        load_frame(VID, path)
    assert info.value.path == path and "Input/output error" in info.value.reason, info.value


def cli_write(src: str, out: str, limit_kib: int | None = None) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "vidshard", "-q", "write", src, out, "--max-video-frames", "30",
               "--shard-size", "150000", "--gop", "8", "--workers", "2"]
    shell = " ".join(f"'{a}'" for a in command)
    if limit_kib is not None:
        shell = f"ulimit -f {limit_kib}; exec {shell}"  # RLIMIT_FSIZE for the driver and its workers
    env = {**os.environ, "PYTHONPATH": ROOT}
    return subprocess.run(["bash", "-c", shell], capture_output=True, text=True, env=env, cwd=ROOT)


def listing(out: str) -> dict[str, bytes]:
    return {n: open(os.path.join(out, n), "rb").read() for n in sorted(os.listdir(out)) if not n.startswith(".")}


def test_output_on_a_file_size_limit_is_named_and_resumes_to_the_same_bytes(small_source, tmp_path):
    out, fresh = str(tmp_path / "out"), str(tmp_path / "fresh")
    failed = cli_write(small_source, out, limit_kib=100)  # the 150 kB shards cannot be written
    assert failed.returncode == 2, failed.stderr
    assert out in failed.stderr and "file-size limit" in failed.stderr and "Traceback" not in failed.stderr, failed.stderr
    assert not os.path.exists(os.path.join(out, "index.json"))
    resumed = cli_write(small_source, out)
    assert resumed.returncode == 0, resumed.stderr
    assert cli_write(small_source, fresh).returncode == 0
    assert listing(out) == listing(fresh) and "index.json" in listing(out)
    assert not os.path.exists(os.path.join(out, ".vidshard-work"))
