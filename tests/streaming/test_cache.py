"""The node-local shard cache under real contention: 8 processes (8 ranks of one job) share
one cache folder whose limit is below their combined demand, over a slow HTTP link so their
downloads overlap; and the cache's single-process promises (open handles survive eviction,
corrupt downloads are never cached)."""

from __future__ import annotations

import collections
import json
import multiprocessing
import os
import shutil
import threading
import time

import pytest

from streaming import VideoShardDataset
from streaming.cache import ShardCache
from streaming.remote import StorageOptions
from vidshard.synth import synth_source

from ..helpers import write
from ..servers import HTTPFileServer

FAST = StorageOptions(block_bytes=32 * 1024, backoff_s=0.01, max_backoff_s=0.05, retries=10, timeout_s=5)
RANKS, EPOCHS = 8, 3


@pytest.fixture(scope="module")
def many_shards(tmp_path_factory):
    """16 shards of about 60 KB (keypoints and clips of 8 short videos)."""
    root = tmp_path_factory.mktemp("many")
    synth_source(str(root / "src"), videos=8, frames=40, views=("front", "left"), size=(32, 32), seed=5)
    write(str(root / "src"), str(root / "ds"), max_video_frames=10, shard_bytes=60_000)
    return str(root / "ds")


def rank_epochs(url: str, cache: str, limit: int, rank: int, start, conn) -> None:
    """One rank of the job (a forked process): EPOCHS epochs of its share, keys per epoch."""
    try:
        os.environ.update(RANK=str(rank), WORLD_SIZE=str(RANKS))
        ds = VideoShardDataset(url, storage=FAST, cache_dir=cache, cache_limit=limit, load_rgb=False, load_kpt=True,
                               shuffle_buffer="40KB", shuffle_block="shard")  # whole shards: what a cache below the dataset takes
        start.wait(60)  # every rank begins at once: the first windows collide
        epochs = []
        for epoch in range(EPOCHS):
            ds.set_epoch(epoch)
            epochs.append([[item["meta"]["key"], item["meta"]["padded"]] for item in ds])
        conn.send({"epochs": epochs, "stats": dict(ds.stats)})
    except BaseException as exc:  # noqa: BLE001 (the parent fails the test with it)
        conn.send({"error": f"{type(exc).__name__}: {exc}"})
    finally:
        os._exit(0)


def test_eight_processes_share_a_cache_smaller_than_their_demand(many_shards, tmp_path):
    index = json.load(open(os.path.join(many_shards, "index.json")))
    sizes = [s["filesize"] for s in index["shardlist"]]
    keys = sorted(s["key"] for shard in index["shardlist"] for s in shard["samples"])
    limit = 3 * max(sizes)  # 8 ranks each want a shard at once: at most 3 fit
    cache = str(tmp_path / "cache")
    os.makedirs(cache)
    peak, samples, stop = [0], [0], threading.Event()

    def watch():  # what the folder holds, sampled as fast as the listing allows
        while not stop.is_set():
            used = 0
            for e in os.scandir(cache):
                if e.name.endswith((".tar", ".partial")):
                    try:
                        used += e.stat().st_size
                    except FileNotFoundError:
                        pass
            peak[0], samples[0] = max(peak[0], used), samples[0] + 1

    ctx = multiprocessing.get_context("fork")
    start = ctx.Barrier(RANKS)
    with HTTPFileServer(many_shards, chunk_delay=0.002) as http:  # a slow link: downloads overlap
        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        pipes, procs = [], []
        for rank in range(RANKS):
            receive, send = ctx.Pipe(duplex=False)
            proc = ctx.Process(target=rank_epochs, args=(f"http://127.0.0.1:{http.port}", cache, limit, rank, start, send))
            proc.start()
            send.close()
            pipes.append(receive)
            procs.append(proc)
        results = []
        deadline = time.monotonic() + 240
        for proc, receive in zip(procs, pipes):
            ready = receive.poll(max(0.0, deadline - time.monotonic()))
            results.append(receive.recv() if ready else {"error": "hung: killed"})
            proc.kill() if not ready else None
            proc.join()
        stop.set()
        watcher.join()
    errors = [r["error"] for r in results if "error" in r]
    assert not errors, errors
    for epoch in range(EPOCHS):
        lengths = {len(r["epochs"][epoch]) for r in results}
        assert len(lengths) == 1  # every rank yields len(ds)
        real = collections.Counter(k for r in results for k, padded in r["epochs"][epoch] if not padded)
        assert sorted(real) == keys and set(real.values()) == {1}  # every item once per epoch
    stats = collections.Counter()
    for r in results:
        stats.update(r["stats"])
    assert 0 < peak[0] <= limit and samples[0] > 100
    assert stats["cache_bypassed"] > 0 and stats["cache_downloads"] > 0  # the limit really was contended
    assert stats["cache_rejected"] == 0 and stats["failed_reads"] == 0
    print(f"\ncache {limit} bytes, peak {peak[0]} ({samples[0]} samples); {dict(stats)}")


def test_an_open_shard_survives_its_eviction(small_dataset, tmp_path):
    index = json.load(open(os.path.join(small_dataset, "index.json")))
    shard = index["shardlist"][0]
    source = os.path.join(small_dataset, shard["url"])
    cache = ShardCache(str(tmp_path / "cache"), limit=shard["filesize"], verify=True)
    stats = collections.Counter()

    def download(dst):
        with open(source, "rb") as f:
            data = f.read()
        dst.write(data)
        import hashlib

        return hashlib.sha256(data).hexdigest()

    first = cache.open(shard["sha256"], shard["filesize"], download, stats)
    again = cache.open(shard["sha256"], shard["filesize"], download, stats)
    assert stats["cache_downloads"] == 1 and stats["cache_hits"] == 1
    for name in os.listdir(tmp_path / "cache"):  # another process evicts it
        if name.endswith(".tar"):
            os.remove(tmp_path / "cache" / name)
    with first, again:
        assert first.read() == again.read() == open(source, "rb").read()


def test_a_corrupt_download_is_never_cached(small_dataset, tmp_path):
    """A shard whose bytes differ from index.json's sha256 (a byte flipped in its end-of-archive
    padding, outside every sample) is read by range instead, once, and never cached."""
    broken = str(tmp_path / "ds")
    shutil.copytree(small_dataset, broken)
    index = json.load(open(os.path.join(broken, "index.json")))
    path = os.path.join(broken, index["shardlist"][0]["url"])
    with open(path, "r+b") as f:
        f.seek(-1, os.SEEK_END)
        f.write(b"\x01")
    cache = tmp_path / "cache"
    with HTTPFileServer(broken) as http:
        ds = VideoShardDataset(f"http://127.0.0.1:{http.port}", storage=FAST, cache_dir=str(cache), load_rgb=False, load_kpt=True)
        for epoch in range(2):
            ds.set_epoch(epoch)
            assert sorted(i["meta"]["key"] for i in ds) == sorted(s["key"] for sh in index["shardlist"] for s in sh["samples"])
    assert ds.stats["cache_rejected"] == 1  # downloaded once, refused, then read by range
    assert not (cache / f"{index['shardlist'][0]['sha256']}.tar").exists()
    assert ds.stats["cache_downloads"] == len(index["shardlist"]) - 1


def test_a_dead_downloaders_reservation_is_reclaimed(tmp_path):
    """A process killed mid-download leaves <sha>.reserve and <sha>.partial behind; the next
    reservation sees its shard lock free, removes both, and the limit is free again."""
    import hashlib
    import signal

    limit = 1000
    cache_dir = str(tmp_path / "cache")
    first, second = bytes(900), bytes(range(256)) * 3
    sha = [hashlib.sha256(data).hexdigest() for data in (first, second)]
    ready = multiprocessing.get_context("fork").Event()

    def doomed():
        def download(dst):  # writes half, then hangs until killed
            dst.write(first[:450])
            dst.flush()
            ready.set()
            time.sleep(60)

        ShardCache(cache_dir, limit).open(sha[0], len(first), download, collections.Counter())

    child = multiprocessing.get_context("fork").Process(target=doomed, daemon=True)
    child.start()
    assert ready.wait(30)
    os.kill(child.pid, signal.SIGKILL)
    child.join()
    assert {f"{sha[0]}.reserve", f"{sha[0]}.partial"} <= set(os.listdir(cache_dir))

    stats = collections.Counter()

    def download(dst):
        dst.write(second)
        return sha[1]

    f = ShardCache(cache_dir, limit).open(sha[1], len(second), download, stats)
    assert f is not None and stats["cache_bypassed"] == 0, stats  # 768 beside the dead 900 would not fit
    with f:
        assert f.read() == second and stats["cache_downloads"] == 1
    assert sorted(os.listdir(cache_dir)) == sorted([f"{sha[1]}.tar", f"{sha[0]}.lock", f"{sha[1]}.lock", ".cache.lock"])


def test_files_the_cache_did_not_make_are_never_evicted(small_dataset, tmp_path):
    """cache_dir= pointed at a folder holding other .tar files (the dataset's own folder, by
    mistake): LRU eviction used to delete any *.tar in it. Only <sha256>.tar files are the
    cache's to count and evict."""
    index = json.load(open(os.path.join(small_dataset, "index.json")))
    shard = index["shardlist"][0]
    cache_dir = tmp_path / "mixed"
    shutil.copytree(small_dataset, cache_dir)  # the dataset's shards, named shard-NNNNNN.tar
    theirs = sorted(p.name for p in cache_dir.iterdir() if p.name.endswith(".tar"))
    cache = ShardCache(str(cache_dir), limit=shard["filesize"])
    source = os.path.join(small_dataset, shard["url"])

    def download(dst):
        data = open(source, "rb").read()
        dst.write(data)
        import hashlib

        return hashlib.sha256(data).hexdigest()

    f = cache.open(shard["sha256"], shard["filesize"], download, collections.Counter())
    assert f is not None  # theirs do not count against the limit
    f.close()
    assert sorted(p.name for p in cache_dir.iterdir() if p.name.startswith("shard-")) == theirs


def _truncate(path: str, sample: dict) -> None:
    os.truncate(path, os.path.getsize(path) // 2)


def _overwrite_header(path: str, sample: dict) -> None:
    """The sample's first tar header overwritten in place: same size, the copy's sha256 differs."""
    with open(path, "r+b") as f:
        f.seek(sample["offset"])
        f.write(b"\xff" * 512)


@pytest.mark.parametrize("damage", [_truncate, _overwrite_header], ids=["truncated", "header-overwritten"])
@pytest.mark.parametrize("kind", ["stream", "map"])
def test_a_damaged_cache_copy_is_dropped_and_fetched_again(small_dataset, tmp_path, caplog, damage, kind):
    """A complete cache copy changed after its download (a disk error, a person, another tool):
    the next epoch still delivers every item (no skip, no repeat), the copy is replaced by a
    fresh one matching index.json, and the log names the damaged copy. It used to skip the
    samples it held in every later epoch, each skip blaming the intact shard at its source."""
    import hashlib

    from streaming import VideoShardMapDataset

    index = json.load(open(os.path.join(small_dataset, "index.json")))
    keys = sorted(s["key"] for sh in index["shardlist"] for s in sh["samples"])
    cache = tmp_path / "cache"
    options = dict(cache_dir=str(cache), load_rgb=True, img_size=(24, 32))
    ds = VideoShardDataset(small_dataset, on_error="skip", **options) if kind == "stream" else \
        VideoShardMapDataset(small_dataset, **options)  # raises any error: there is no skip policy

    def epoch(n: int) -> list[str]:
        ds.set_epoch(n)
        items = list(ds) if kind == "stream" else [ds[i] for i in range(len(ds))]
        assert not any(item["meta"]["padded"] for item in items)
        return sorted(item["meta"]["key"] for item in items)

    assert epoch(0) == keys
    shard = index["shardlist"][1]
    copy = cache / f"{shard['sha256']}.tar"
    if kind == "map":
        ds.close()  # this thread's open files: a map dataset holds them between items
    damage(str(copy), shard["samples"][1])
    with caplog.at_level("WARNING", logger="vidshard"):
        assert epoch(1) == keys
    assert hashlib.sha256(copy.read_bytes()).hexdigest() == shard["sha256"]
    assert ds.stats["cache_damaged"] == 1 and not any(k.startswith("skipped") for k in ds.stats), ds.stats
    assert [r for r in caplog.records if "cache copy" in r.getMessage() and shard["sha256"][:16] in r.getMessage()
            and ("fetching the shard again" in r.getMessage() or "reading the shard again" in r.getMessage())], caplog.text


def test_a_copy_dropped_by_another_process_is_read_again_not_blamed_on_the_source(small_dataset, tmp_path):
    """Two readers share one cache and both hold the copy open; the copy is damaged, the first
    finds it out and drops it. The second, reading its old (unlinked) copy, sees it replaced
    and reads again: it delivers every item too, without hashing anything itself."""
    from streaming import VideoShardMapDataset

    cache = str(tmp_path / "cache")
    a, b = (VideoShardMapDataset(small_dataset, cache_dir=cache, load_rgb=False, load_kpt=True) for _ in range(2))
    keys = sorted(a[i]["meta"]["key"] for i in range(len(a)))
    assert sorted(b[i]["meta"]["key"] for i in range(len(b))) == keys  # both hold every shard's copy open
    shard = json.load(open(os.path.join(small_dataset, "index.json")))["shardlist"][1]
    _overwrite_header(str(tmp_path / "cache" / f"{shard['sha256']}.tar"), shard["samples"][1])
    for ds in (a, b):
        assert sorted(ds[i]["meta"]["key"] for i in range(len(ds))) == keys
    assert a.stats["cache_damaged"] == 1 and b.stats["cache_damaged"] == 0


def test_an_intact_copy_holding_a_bad_sample_is_hashed_once(small_dataset, tmp_path, monkeypatch):
    """A shard (and so its cache copy) with a bad sample, sha256 as index.json says: the copy
    is hashed once in this process, not every epoch; the sample is skipped every epoch."""
    import streaming.cache

    from .hostile_shards import change_first, replace

    copy = str(tmp_path / "ds")
    shutil.copytree(small_dataset, copy)
    change_first(copy, replace("meta.json", lambda k, d: b"{not json"))
    hashed = collections.Counter()
    real = streaming.cache.sha256_of
    monkeypatch.setattr(streaming.cache, "sha256_of", lambda f: hashed.update(["copy"]) or real(f))
    ds = VideoShardDataset(copy, cache_dir=str(tmp_path / "cache"), load_rgb=False, load_kpt=True, on_error="skip")
    for epoch in range(3):
        ds.set_epoch(epoch)
        assert sum(1 for _ in ds) == len(ds)
    assert hashed["copy"] == 1 and ds.stats["skipped_format"] == 3 and ds.stats["cache_damaged"] == 0


def test_a_cache_disk_failing_while_a_copy_is_checked_leaves_the_skip(small_dataset, tmp_path, monkeypatch):
    """The check of a copy fails (the cache's disk): counted and logged, and the sample's own
    error stands (a skip under "skip"), never a crash of the epoch."""
    from streaming.cache import ShardCache

    from .hostile_shards import change_first, replace

    copy = str(tmp_path / "ds")
    shutil.copytree(small_dataset, copy)
    change_first(copy, replace("meta.json", lambda k, d: b"{not json"))

    def failing(self, sha256, size):
        raise PermissionError(13, "Permission denied", os.path.join(self.dir, f"{sha256}.lock"))

    monkeypatch.setattr(ShardCache, "check_copy", failing)
    ds = VideoShardDataset(copy, cache_dir=str(tmp_path / "cache"), load_rgb=False, load_kpt=True, on_error="skip")
    assert sum(1 for _ in ds) == len(ds)
    assert ds.stats["skipped_format"] == 1 and ds.stats["cache_errors"] == 1
