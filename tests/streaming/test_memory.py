"""The memory bound of docs/streaming.md, measured: the peak of traced allocations (Python
objects and numpy arrays, tracemalloc) while one worker yields an epoch must stay within

    max(shuffle_buffer, largest encoded sample) + one item + READ_BUFFER + parsing slack
  (+ 2 x min(block_bytes, window) + the HTTP client's buffers, reading from a server)

Holding a window's samples while the next window is read (the bug this guards) costs a
second window, which the local bound leaves no room for."""

from __future__ import annotations

import gc
import json
import os
import socket
import subprocess
import sys
import time
import tracemalloc

import pytest

from streaming import VideoShardDataset
from streaming.ranges import READ_BUFFER
from streaming.remote import StorageOptions
from vidshard.synth import synth_source

from ..helpers import write
from ..servers import free_port

PARSE_SLACK = 128 * 1024  # parsed JSON of a window's samples, tar and npy headers (numpy parses these with ast: cyclic garbage)
CLIENT_SLACK = 128 * 1024  # aiohttp's socket buffer (two 64 KiB reads in flight)
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def sixteen_samples(tmp_path_factory):
    """16 samples of about 30 KB (3 views of 20 frames at 160x120, keypoints)."""
    root = tmp_path_factory.mktemp("mem")
    synth_source(str(root / "src"), videos=2, frames=160, views=("front", "left", "right"), size=(160, 120), seed=3)
    write(str(root / "src"), str(root / "ds"), max_video_frames=20, shard_bytes=4_000_000)
    return str(root / "ds")


def item_bytes(item) -> int:
    tensors = [item["video"], item["frame_index"], item["frame_labels"], item["keypoints_mask"], *item["keypoints"].values()]
    return sum(t.numel() * t.element_size() for t in tensors)


def traced_peak(ds) -> tuple[int, int]:
    """(peak traced bytes over an epoch above what was live before it, largest item)."""
    largest = max(item_bytes(item) for item in ds)  # also warms imports and caches
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        for item in ds:
            del item  # a consumer that keeps nothing: the worker's own footprint
        return tracemalloc.get_traced_memory()[1] - base, largest
    finally:
        tracemalloc.stop()


def largest_sample(path: str) -> int:
    index = json.load(open(os.path.join(path, "index.json")))
    return max(s["size"] for shard in index["shardlist"] for s in shard["samples"])


@pytest.mark.parametrize("buffer", [100_000, 200_000])
def test_one_worker_holds_one_window(sixteen_samples, buffer):
    ds = VideoShardDataset(sixteen_samples, img_size=(16, 16), load_kpt=True, shuffle_buffer=buffer)
    peak, item = traced_peak(ds)
    window = max(buffer, largest_sample(sixteen_samples))
    bound = window + item + READ_BUFFER + PARSE_SLACK
    print(f"\nshuffle_buffer {buffer}: peak {peak} bytes, bound {bound} (window {window}, item {item})")
    assert window < peak <= bound  # a second window would not fit


@pytest.fixture
def range_server(sixteen_samples):
    """An HTTP server with Range support in its own process (its allocations are not ours)."""
    port = free_port()
    code = ("import sys; from tests.servers import RangeHandler, ThreadingHTTPServer; "
            f"ThreadingHTTPServer(('127.0.0.1', {port}), lambda *a, **k: RangeHandler(*a, directory=sys.argv[1], **k)).serve_forever()")
    server = subprocess.Popen([sys.executable, "-c", code, sixteen_samples], cwd=ROOT)
    deadline = time.monotonic() + 20
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.kill()
    server.wait()


def test_one_worker_reading_from_a_server(sixteen_samples, range_server):
    buffer, block = 200_000, 64 * 1024
    ds = VideoShardDataset(range_server, img_size=(16, 16), load_kpt=True, shuffle_buffer=buffer,
                           storage=StorageOptions(block_bytes=block))
    peak, item = traced_peak(ds)
    window = max(buffer, largest_sample(sixteen_samples))
    bound = window + item + READ_BUFFER + PARSE_SLACK + 2 * min(block, window) + CLIENT_SLACK
    print(f"\nover HTTP: peak {peak} bytes, bound {bound}")
    assert window < peak <= bound
