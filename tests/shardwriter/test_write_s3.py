"""Writing to object storage (moto's S3 server on loopback): killed and resumed, the objects
are the local run's bytes, and nothing partial is listed under a final name."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time

from shardwriter.encode import EncodeSettings
from shardwriter.job import WriteConfig, write_dataset
from streaming import VideoShardDataset

from ..servers import use_endpoint


def digests_s3(prefix: str) -> dict[str, str]:
    import s3fs

    fs = s3fs.S3FileSystem()
    return {os.path.basename(p): hashlib.sha256(fs.cat_file(p)).hexdigest() for p in sorted(fs.ls(f"vidshard/{prefix}"))}


def test_write_to_s3_killed_and_resumed_gives_the_same_objects(small_source, small_dataset, s3_server, tmp_path):
    use_endpoint(s3_server)
    config = dict(max_video_frames=30, overlap=6, shard_bytes=150_000)
    cmd = [sys.executable, "-m", "vidshard", "-q", "write", small_source, "s3://vidshard/out", "--max-video-frames", "30",
           "--overlap", "6", "--shard-size", "150000", "--gop", "8", "--workers", "2", "--work-dir", str(tmp_path / "work")]
    env = {**os.environ}
    seen_partial = []
    for delay in (2.0, 3.0):
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        time.sleep(delay)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        listed = digests_s3("out") if _exists("out") else {}
        seen_partial.append("index.json" in listed)
        final = {n: d for n, d in listed.items() if n.endswith(".tar")}
        local = {n: hashlib.sha256(open(os.path.join(small_dataset, n), "rb").read()).hexdigest() for n in final}
        assert final == local  # whatever is listed under a final name is complete
    assert subprocess.run(cmd, env=env, capture_output=True).returncode == 0
    objects = digests_s3("out")
    expected = {n: hashlib.sha256(open(os.path.join(small_dataset, n), "rb").read()).hexdigest() for n in os.listdir(small_dataset)}
    assert objects == expected and not all(seen_partial)
    ds = VideoShardDataset("s3://vidshard/out", load_rgb=False, load_kpt=True)
    assert len(list(ds)) == 9
    assert write_dataset(small_source, "s3://vidshard/out", WriteConfig(**config, encode=EncodeSettings(gop=8)),
                         work_dir=str(tmp_path / "work")).chunks == 9  # complete: nothing to do


def _exists(prefix: str) -> bool:
    import s3fs

    return s3fs.S3FileSystem().exists(f"vidshard/{prefix}")
