"""Streaming from and writing to real servers on loopback: moto's S3 server (s3fs client) and
an HTTP server with Range support, both behind a proxy that resets connections mid-shard."""

from __future__ import annotations

import collections
import json
import logging
import os
import subprocess
import sys
import threading
import time

import pytest

from streaming import VideoShardDataset
from streaming.remote import ShardReadError, StorageOptions

from ..servers import SECRET, FaultyProxy, HTTPFileServer, upload, use_endpoint

FAST = StorageOptions(block_bytes=16 * 1024, backoff_s=0.01, max_backoff_s=0.05, retries=30, timeout_s=1)


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
    cli = subprocess.run([sys.executable, "-m", "vidshard", "-v", "verify", "s3://vidshard/creds/"],
                         capture_output=True, text=True, env={**os.environ, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{s3_server}"})
    text = caplog.text + "\n".join(messages) + cli.stdout + cli.stderr
    assert messages and "all checks hold" in cli.stdout
    assert SECRET not in text and "AKIAVIDSHARDTEST" not in text
