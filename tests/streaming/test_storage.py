"""Streaming from and writing to real servers on loopback: moto's S3 server (s3fs client) and
an HTTP server with Range support, both behind a proxy that resets connections mid-shard."""

from __future__ import annotations

import collections
import dataclasses
import json
import logging
import os
import subprocess
import sys
import threading
import time

import pytest

from streaming import VideoShardDataset
from streaming.errors import ShardReadError
from streaming.remote import StorageOptions

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


def test_s3_client_retries_are_off_so_every_fault_is_ours_to_count(small_dataset, s3_server):
    """botocore retries a reset before the first response byte by itself unless told not to:
    then a flaky store looks healthy in our counters and the retry budget is not ours."""
    from streaming.ranges import RangeReader

    upload(small_dataset, "first", s3_server)
    want = open(os.path.join(small_dataset, "index.json"), "rb").read()
    with FaultyProxy(s3_server, reset_p=0.0, reset_first=2) as proxy:
        use_endpoint(proxy.port)
        stats = collections.Counter()
        got = RangeReader("s3://vidshard/first/index.json", 0, len(want), FAST, stats).fetch(0, len(want))
    assert got == want and proxy.resets == 2
    assert stats["retries"] == 2 and stats["failed_reads"] == 0


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
                                   verify_cache=True, load_rgb=False, load_kpt=True,
                                   shuffle_block="shard")  # whole shards: what a cache below the dataset takes
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


def serve_with_python_http_server(root: str) -> tuple[subprocess.Popen, int]:
    """`python -m http.server` over a folder: the quickest server there is, and one that
    ignores Range headers (every GET answers 200 with the whole file)."""
    import socket

    from ..servers import free_port

    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", root],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return server, port
        except OSError:
            time.sleep(0.05)
    server.kill()
    raise RuntimeError("python -m http.server did not start")


@pytest.fixture
def plain_http(small_dataset):
    server, port = serve_with_python_http_server(small_dataset)
    yield f"http://127.0.0.1:{port}"
    server.kill()
    server.wait()


@pytest.mark.parametrize("policy", ["raise", "skip"])
def test_server_ignoring_range_stops_at_once_naming_it(plain_http, policy):
    from streaming.errors import RangeNotSupportedError

    ds = VideoShardDataset(plain_http, storage=FAST, on_error=policy, load_rgb=False, load_kpt=True)
    start = time.monotonic()
    with pytest.raises(RangeNotSupportedError, match="the server ignores HTTP Range requests .*answered 200") as info:
        next(iter(ds))
    assert time.monotonic() - start < 10 and "cache_dir=" in str(info.value)
    assert ds.stats["retries"] == 0  # not taken for a transient fault


def test_server_ignoring_range_streams_an_epoch_through_the_cache(plain_http, small_dataset, tmp_path):
    ds = VideoShardDataset(plain_http, storage=FAST, cache_dir=str(tmp_path / "cache"), load_kpt=True, img_size=(16, 16))
    keys = epoch_keys(ds)
    assert len(keys) == 9 and set(keys.values()) == {1}
    shards = len(json.load(open(os.path.join(small_dataset, "index.json")))["shardlist"])
    assert ds.stats["whole_downloads"] == ds.stats["cache_downloads"] == shards and ds.stats["cache_rejected"] == 0


@pytest.mark.parametrize("cache", [False, True])
def test_object_store_ignoring_range_stops_at_once_naming_it(small_dataset, tmp_path, cache):
    """An object store (s3fs, gcsfs: any fsspec filesystem but HTTP) that answers a ranged GET
    with the whole object: its first bytes must not pass for the range asked for."""
    import fsspec
    from fsspec.implementations.memory import MemoryFileSystem

    from streaming.errors import RangeNotSupportedError

    class IgnoresRange(MemoryFileSystem):
        protocol = "norange"

        @classmethod
        def _strip_protocol(cls, path):
            return "/" + path.removeprefix("norange://").lstrip("/")

        def cat_file(self, path, start=None, end=None, **kwargs):
            return super().cat_file(path, **kwargs)  # the whole object, whatever was asked

    fsspec.register_implementation("norange", IgnoresRange, clobber=True)
    fs = IgnoresRange()
    for name in os.listdir(small_dataset):
        fs.pipe_file(f"/ds{tmp_path.name}/{name}", open(os.path.join(small_dataset, name), "rb").read())
    options = {"cache_dir": str(tmp_path / "cache")} if cache else {}
    ds = VideoShardDataset(f"norange://ds{tmp_path.name}/", storage=FAST, on_error="skip", load_rgb=False, load_kpt=True,
                           **options)
    with pytest.raises(RangeNotSupportedError, match=r"norange://ds.*: the storage answered \d+ bytes to a request for the"):
        next(iter(ds))


def test_server_ignoring_range_streams_shards_the_cache_cannot_take(plain_http, small_dataset, tmp_path):
    """cache_dir= with a limit below the larger shards (as with many workers contending for
    a node's cache): those shards are bypassed, and read from plain GETs of the whole file
    rather than stopping with RangeNotSupportedError mid-epoch; through connection resets."""
    from ..servers import FaultyProxy

    index = json.load(open(os.path.join(small_dataset, "index.json")))
    sizes = sorted(s["filesize"] for s in index["shardlist"])
    port = int(plain_http.rsplit(":", 1)[1])
    with FaultyProxy(port, reset_p=0.1, seed=4) as proxy:
        ds = VideoShardDataset(f"http://127.0.0.1:{proxy.port}", storage=dataclasses.replace(FAST, timeout_s=0.25),
                               cache_dir=str(tmp_path / "cache"), shuffle_block="shard",  # (FAST's 16 KiB requests cap "auto")
                               cache_limit=sizes[-1] - 1, load_kpt=True, img_size=(16, 16))
        for epoch in range(2):
            ds.set_epoch(epoch)
            keys = epoch_keys(ds)
            assert len(keys) == 9 and set(keys.values()) == {1}
    assert ds.stats["cache_bypassed"] > 0 and ds.stats["whole_get_reads"] > 0 and ds.stats["failed_reads"] == 0
    assert proxy.resets > 0 and ds.stats["retries"] > 0


def test_a_plain_get_read_reconnects_and_delivers_exactly_its_range(plain_http, small_dataset):
    from streaming.ranges import open_range

    from ..servers import FaultyProxy

    raw = open(os.path.join(small_dataset, "shard-000000.tar"), "rb").read()
    offset, length = len(raw) // 3, len(raw) // 2  # a range inside the shard, whatever size the writer made it
    stats = collections.Counter()
    # The proxy's resets reach the client as a stall (its socket is closed while another
    # thread reads it): a short timeout keeps each retry short, but not so short that a
    # healthy read on a loaded machine times out too (0.25 s failed 31 times in a full run).
    options = dataclasses.replace(FAST, timeout_s=1.0)
    with FaultyProxy(int(plain_http.rsplit(":", 1)[1]), reset_p=0.15, seed=5) as proxy:
        url = f"http://127.0.0.1:{proxy.port}/shard-000000.tar"
        with open_range(url, offset, length, options, stats, whole_get=True) as f:
            got = b"".join(iter(lambda: f.read(7000), b""))
    assert got == raw[offset:offset + length]
    assert stats["whole_get_reads"] == 1 and proxy.resets > 0 and stats["retries"] > 0 and stats["failed_reads"] == 0


def test_a_whole_download_longer_than_index_json_never_outgrows_its_reservation(plain_http, small_dataset):
    """A plain GET whose body is longer than index.json's filesize: refused, and the cache's
    partial file never holds more than the size reserved for it."""
    import io

    from streaming.ranges import download

    class Tracking(io.BytesIO):
        peak = 0

        def write(self, data):
            n = super().write(data)
            Tracking.peak = max(Tracking.peak, self.tell())
            return n

    size = os.path.getsize(os.path.join(small_dataset, "shard-000000.tar")) - 100
    with pytest.raises(ShardReadError, match=f"{size + 1} bytes received, index.json says {size}"):
        download(f"{plain_http}/shard-000000.tar", size, Tracking(), dataclasses.replace(FAST, retries=0), collections.Counter())
    assert Tracking.peak <= size  # (how much was written first depends on how the body arrived in blocks)


def test_errors_are_classified_by_type_not_by_name():
    import aiohttp
    import botocore.exceptions as boto

    from streaming.remote import is_transient

    class TimeoutConnectionPayloadClientError(Exception):
        """Named like every transient error of the libraries, but not one of them."""

    def client_error(status):
        return boto.ClientError({"Error": {"Code": "x"}, "ResponseMetadata": {"HTTPStatusCode": status}}, "GetObject")

    def response_error(status):
        return aiohttp.ClientResponseError(request_info=None, history=(), status=status)

    transient = [aiohttp.ClientPayloadError("cut"), aiohttp.ServerDisconnectedError(), response_error(503), response_error(429),
                 boto.ReadTimeoutError(endpoint_url="x"), boto.ResponseStreamingError(error="x"), client_error(500),
                 ConnectionResetError(), TimeoutError(), EOFError("cut")]
    permanent = [response_error(404), response_error(403), client_error(403), FileNotFoundError("x"), PermissionError("x"),
                 ValueError("x"), TimeoutConnectionPayloadClientError()]
    assert [is_transient(e) for e in transient] == [True] * len(transient)
    assert [is_transient(e) for e in permanent] == [False] * len(permanent)


def test_backoff_waits_are_jittered(monkeypatch):
    import socket

    import streaming.ranges as ranges
    import streaming.remote as remote

    waits = []
    monkeypatch.setattr(remote.time, "sleep", waits.append)
    with socket.socket() as s:  # a port nobody listens on: every connect is refused (transient)
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    options = StorageOptions(retries=6, backoff_s=0.1, max_backoff_s=0.4, timeout_s=1)
    reader = ranges.RangeReader(f"http://127.0.0.1:{port}/x.tar", 0, 100, options, collections.Counter())
    with pytest.raises(ShardReadError, match="failed after 7 attempt"):
        reader.fetch(0, 100)
    nominal = [0.1, 0.2, 0.4, 0.4, 0.4, 0.4]
    assert len(waits) == 6 and all(w / 2 <= got <= w for got, w in zip(waits, nominal))
    assert len(set(waits)) == 6  # drawn, not the nominal sequence


def test_gcs_requests_get_our_timeouts():
    import aiohttp

    from streaming.remote import fs_kwargs

    kwargs = fs_kwargs("gs", StorageOptions(timeout_s=7))
    for timeout in (kwargs["requests_timeout"], kwargs["session_kwargs"]["timeout"]):
        assert isinstance(timeout, aiohttp.ClientTimeout) and timeout.sock_connect == timeout.sock_read == 7


def test_verify_never_prints_credentials(small_dataset, tmp_path, capsys):
    import shutil

    from vidshard.cli import main

    broken = str(tmp_path / "ds")
    shutil.copytree(small_dataset, broken)
    os.remove(os.path.join(broken, "shard-000001.tar"))
    with HTTPFileServer(broken) as http:
        assert main(["verify", f"http://user:{SECRET}@127.0.0.1:{http.port}/"]) == 1
    out = capsys.readouterr().out
    assert "FAIL http://***@127.0.0.1" in out and SECRET not in out


def test_command_errors_never_print_credentials(small_dataset, capsys):
    """The CLI's error line (a missing key, a shard not in index.json) names the source
    without user:password@."""
    from vidshard.cli import main

    with HTTPFileServer(small_dataset) as http:
        base = f"http://user:{SECRET}@127.0.0.1:{http.port}"
        assert main(["ls", f"{base}/", "--key", "no_such_key_00000"]) == 2
        assert main(["inspect", f"{base}/shard-00000{{0..9}}.tar"]) == 2
    err = capsys.readouterr().err
    assert "no sample 'no_such_key_00000'" in err and "shards not listed" in err and "http://***@127.0.0.1" in err
    assert SECRET not in err


def test_a_read_failing_mid_run_skips_each_unread_sample(small_dataset, caplog):
    """A shard whose server fails after its first block (503 for every later range): the
    sample being read fails after its retries, the run's later samples are never read, and
    each of them is one logged, counted, replaced skip naming its own key."""
    import re as regex
    from http.server import ThreadingHTTPServer

    from ..servers import RangeHandler, free_port

    class FailsAfterFirstBlock(RangeHandler):
        def send_head(self):
            start = regex.match(r"bytes=(\d+)-", self.headers.get("Range", ""))
            if self.path.endswith("shard-000001.tar") and start and int(start.group(1)) > 0:
                self.send_error(503)
                return None
            return super().send_head()

    index = json.load(open(os.path.join(small_dataset, "index.json")))
    lost = [s["key"] for s in index["shardlist"][1]["samples"]]
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), lambda *a, **k: FailsAfterFirstBlock(*a, directory=small_dataset, **k))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        options = StorageOptions(block_bytes=16 * 1024, backoff_s=0.01, max_backoff_s=0.02, retries=2, timeout_s=2)
        with pytest.raises(ShardReadError, match="failed after 3 attempt") as info:
            list(VideoShardDataset(url, storage=options, shuffle=False, load_rgb=False, load_kpt=True))
        assert info.value.shard.endswith("shard-000001.tar") and info.value.key in lost
        caplog.set_level(logging.WARNING, logger="vidshard")
        ds = VideoShardDataset(url, storage=options, load_rgb=False, load_kpt=True, on_error="skip")
        items = list(ds)
    finally:
        server.shutdown()
        server.server_close()
    assert len(items) == len(ds) == 9 and not {i["meta"]["key"] for i in items} & set(lost)
    assert ds.state_dict()["skipped"] == {"read": len(lost)} and ds.stats["substituted"] == len(lost)
    for key in lost:
        assert any(key in r.getMessage() and "shard-000001.tar" in r.getMessage() for r in caplog.records), key
    assert any("not read: an earlier sample of its run failed" in r.getMessage() for r in caplog.records)


def test_a_full_cache_disk_during_a_whole_get_is_a_cache_error_not_a_network_fault(plain_http, small_dataset, tmp_path,
                                                                                   monkeypatch):
    """ENOSPC writing a whole-GET download into the cache: one attempt (no re-downloads),
    raised as the OSError it is, which the reader counts in cache_errors and reads past."""
    import errno
    import io

    import streaming.cache as cache_module
    from streaming.ranges import download

    class Full(io.BytesIO):
        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")

    stats = collections.Counter()
    size = os.path.getsize(os.path.join(small_dataset, "shard-000000.tar"))
    with pytest.raises(OSError) as raised:
        download(f"{plain_http}/shard-000000.tar", size, Full(), FAST, stats)
    assert raised.value.errno == errno.ENOSPC and not isinstance(raised.value, ShardReadError)
    assert stats["retries"] == 0 and stats["whole_downloads"] == 1

    real_open = open

    def full_disk(path, mode="r", *args, **kwargs):
        f = real_open(path, mode, *args, **kwargs)
        if str(path).endswith(".partial"):  # the download, not the reservation
            def write(data):
                raise OSError(errno.ENOSPC, "No space left on device")
            f.write = write
        return f

    monkeypatch.setattr(cache_module, "open", full_disk, raising=False)
    ds = VideoShardDataset(plain_http, storage=FAST, cache_dir=str(tmp_path / "cache"), load_kpt=True, img_size=(16, 16))
    keys = epoch_keys(ds)
    shards = len(json.load(open(os.path.join(small_dataset, "index.json")))["shardlist"])
    assert len(keys) == 9 and set(keys.values()) == {1}
    assert ds.stats["cache_errors"] == ds.stats["whole_downloads"] == shards and ds.stats["retries"] == 0, ds.stats
    assert not any(k.startswith("skipped_") for k in ds.stats)
