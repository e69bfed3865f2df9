"""Streaming from and writing to real servers on loopback: moto's S3 server (s3fs client) and
an HTTP server with Range support, both behind a proxy that resets connections mid-shard."""

from __future__ import annotations

import collections
import hashlib
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from shardwriter.job import WriteConfig, write_dataset
from streaming import VideoShardDataset
from streaming.remote import ShardReadError, StorageOptions

from .servers import FaultyProxy, HTTPFileServer, free_port

SECRET = "SECRETvidshard0123456789abcdef"
FAST = StorageOptions(block_bytes=16 * 1024, backoff_s=0.01, max_backoff_s=0.05, retries=30, timeout_s=1)


@pytest.fixture(scope="module")
def s3_server():
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    env = {"AWS_ACCESS_KEY_ID": "AKIAVIDSHARDTEST", "AWS_SECRET_ACCESS_KEY": SECRET, "AWS_DEFAULT_REGION": "us-east-1"}
    old = {k: os.environ.get(k) for k in [*env, "AWS_ENDPOINT_URL"]}
    os.environ.update(env)
    import boto3

    boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}").create_bucket(Bucket="vidshard")
    yield port
    server.stop()
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def use_endpoint(port: int) -> None:
    os.environ["AWS_ENDPOINT_URL"] = f"http://127.0.0.1:{port}"
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()  # a new endpoint: no cached client


def upload(local: str, prefix: str, port: int) -> None:
    import boto3

    client = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}")
    for name in os.listdir(local):
        client.upload_file(os.path.join(local, name), "vidshard", f"{prefix}/{name}")


def epoch_keys(ds) -> collections.Counter:
    return collections.Counter(item["meta"]["key"] for item in ds)


def test_http_epoch_through_resets_delivers_every_sample_once(small_dataset):
    with HTTPFileServer(small_dataset) as http, FaultyProxy(http.port, reset_p=0.08, seed=1) as proxy:
        ds = VideoShardDataset(f"http://127.0.0.1:{proxy.port}", storage=FAST, img_size=(16, 16), load_kpt=True)
        keys = epoch_keys(ds)
    assert len(keys) == 9 and set(keys.values()) == {1}
    assert proxy.resets > 0 and ds.stats["retries"] > 0 and ds.stats["failed_reads"] == 0


def test_s3_epoch_through_resets_delivers_every_sample_once(small_dataset, s3_server):
    upload(small_dataset, "ds", s3_server)
    with FaultyProxy(s3_server, reset_p=0.05, seed=2) as proxy:
        use_endpoint(proxy.port)
        ds = VideoShardDataset("s3://vidshard/ds/", storage=FAST, sample="segment", num_frames=4, load_kpt=True)
        keys = epoch_keys(ds)
    index = json.load(open(os.path.join(small_dataset, "index.json")))
    assert sum(keys.values()) == index["totals"]["chunk_segments"] and len(keys) == 9
    assert proxy.resets > 0 and ds.stats["retries"] > 0


def test_stuck_server_times_out_into_the_error_policy(small_dataset):
    import socket

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)  # accepts connections, never answers
    with HTTPFileServer(small_dataset) as http:
        index_url = f"http://127.0.0.1:{http.port}/index.json"
        ds = VideoShardDataset(index_url, storage=StorageOptions(timeout_s=0.5, retries=1, backoff_s=0.01))
        ds.urls = [f"http://127.0.0.1:{listener.getsockname()[1]}/{os.path.basename(u)}" for u in ds.urls]
        start = time.monotonic()
        with pytest.raises(ShardReadError, match="failed after 2 attempt"):
            next(iter(ds))
        assert time.monotonic() - start < 10
    listener.close()


def test_cache_stays_under_its_limit_and_serves_the_second_epoch(small_dataset, tmp_path):
    index = json.load(open(os.path.join(small_dataset, "index.json")))
    sizes = sorted(s["filesize"] for s in index["shardlist"])
    limit = sum(sizes) - sizes[0] // 2  # smaller than the dataset
    cache = tmp_path / "cache"
    peak = [0]
    stop = threading.Event()

    def watch():
        while not stop.is_set():
            try:
                used = sum(e.stat().st_size for e in os.scandir(cache) if e.name.endswith((".tar", ".partial")))
            except FileNotFoundError:
                used = 0
            peak[0] = max(peak[0], used)
            time.sleep(0.001)

    watcher = threading.Thread(target=watch)
    with HTTPFileServer(small_dataset) as http:
        watcher.start()
        try:
            ds = VideoShardDataset(f"http://127.0.0.1:{http.port}", storage=FAST, cache_dir=str(cache), cache_limit=limit,
                                   verify_cache=True, load_rgb=False, load_kpt=True)
            for epoch in range(2):
                ds.set_epoch(epoch)
                assert len(epoch_keys(ds)) == 9
            from torch.utils.data import DataLoader

            assert len(list(DataLoader(ds, batch_size=None, num_workers=2))) == 9  # shared by processes
        finally:
            stop.set()
            watcher.join()
    assert 0 < peak[0] <= limit
    assert ds.stats["cache_downloads"] >= len(sizes) and ds.stats["cache_hits"] > 0


def digests_s3(prefix: str) -> dict[str, str]:
    import s3fs

    fs = s3fs.S3FileSystem()
    return {os.path.basename(p): hashlib.sha256(fs.cat_file(p)).hexdigest() for p in sorted(fs.ls(f"vidshard/{prefix}"))}


def test_write_to_s3_killed_and_resumed_gives_the_same_objects(small_source, small_dataset, s3_server, tmp_path):
    use_endpoint(s3_server)
    config = dict(max_video_frames=30, overlap=6, shard_bytes=150_000)
    from shardwriter.encode import EncodeSettings

    cmd = [sys.executable, "-m", "shardwriter.cli", "-q", "write", small_source, "s3://vidshard/out", "--max-video-frames", "30",
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


def test_credentials_never_appear_in_logs_or_errors(small_dataset, s3_server, caplog, capfd):
    upload(small_dataset, "creds", s3_server)
    caplog.set_level(logging.DEBUG, logger="vidshard")
    with FaultyProxy(s3_server, reset_p=0.2, seed=3) as proxy:
        use_endpoint(proxy.port)
        messages = []
        ds = VideoShardDataset("s3://vidshard/creds/", storage=StorageOptions(retries=1, backoff_s=0.01, block_bytes=8192, timeout_s=1),
                               load_rgb=False, load_kpt=True)
        try:
            list(ds)
        except ShardReadError as exc:
            messages.append(str(exc))
        for url in ("s3://vidshard/creds/missing.tar", f"https://user:{SECRET}@127.0.0.1:1/x.tar?X-Amz-Signature={SECRET}"):
            ds.urls = [url] * len(ds.urls)
            try:
                list(ds)
            except Exception as exc:  # noqa: BLE001 (any message at all must be clean)
                messages.append(str(exc))
    # The command line at its most verbose: third-party debug logs (which print signed
    # headers) stay quiet.
    cli = subprocess.run([sys.executable, "-m", "shardwriter.cli", "-v", "verify", "s3://vidshard/creds/"],
                         capture_output=True, text=True, env={**os.environ, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{s3_server}"})
    text = caplog.text + "\n".join(messages) + cli.stdout + cli.stderr
    assert messages and "all checks hold" in cli.stdout
    assert SECRET not in text and "AKIAVIDSHARDTEST" not in text
