"""VideoShardMapDataset under torch's loaders and samplers, across processes, and from S3."""

from __future__ import annotations

import collections
import gc
import json
import logging
import os
import pickle
import shutil
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, DistributedSampler, WeightedRandomSampler

from streaming import VideoShardMapDataset, collate
from streaming.decode import ClipDecoder
from streaming.errors import DecodeError
from streaming.ranges import RangeReader

from ..servers import upload, use_endpoint
from .test_map_dataset import check_pixels, identity, same_item, spoil_clip


def drain(loader) -> tuple[list[tuple], dict]:
    """(key, segment_id) of every item a loader yields, and its first batch."""
    seen, first = [], None
    for batch in loader:
        seen += [(m["key"], m["segment_id"]) for m in batch["meta"]]
        first = first or batch
    return seen, first


def every_item(ds) -> list[tuple]:
    return sorted((item["meta"]["key"], item["meta"]["segment_id"]) for item in (ds[i] for i in range(len(ds))))


def test_weighted_sampler_with_two_workers_draws_rare_labels_at_their_weight(map_dataset):
    """Inverse-frequency weights make every label equally likely. Tolerance: each label's
    count lies within 4 binomial standard deviations of N / labels (a correct sampler fails
    that with probability ~6e-5 per label); the generator is seeded, so the test repeats."""
    ds = VideoShardMapDataset(map_dataset, sample="segment", num_frames=2, load_rgb=False, load_kpt=True)
    labels = ds.label_ids
    counts = np.bincount(labels)
    assert labels.min() >= 0 and len(counts) == 3
    rare = int(counts.argmin())
    assert counts[rare] / len(labels) < 0.15  # without weights the rare label would be drawn < 15% of the time
    weights = 1.0 / counts[labels]
    n = 900
    sampler = WeightedRandomSampler(weights, n, replacement=True, generator=torch.Generator().manual_seed(11))
    loader = DataLoader(ds, batch_size=30, sampler=sampler, num_workers=2, collate_fn=collate)
    drawn = np.concatenate([batch["label_id"].numpy() for batch in loader])
    assert len(drawn) == n
    again = WeightedRandomSampler(weights, n, replacement=True, generator=torch.Generator().manual_seed(11))
    assert drawn.tolist() == labels[list(again)].tolist()  # the items delivered are those drawn, in order
    p = 1 / len(counts)
    sigma = np.sqrt(n * p * (1 - p))
    got = np.bincount(drawn, minlength=len(counts))
    assert np.all(np.abs(got - n * p) <= 4 * sigma), (got, n * p, sigma)


def test_shuffled_loader_with_workers_and_distributed_sampler_cover_every_item(map_dataset):
    ds = VideoShardMapDataset(map_dataset, sample="segment", num_frames=2, views=("left",), img_size=(16, 16))
    ds[0]  # decoded in the main process first (a notebook does): the forked workers must not hang on its decoder
    loader = DataLoader(ds, batch_size=4, shuffle=True, num_workers=2, collate_fn=collate, timeout=30,
                        generator=torch.Generator().manual_seed(3))
    seen, first = drain(loader)
    assert sorted(seen) == every_item(ds)
    check_pixels({"video": first["video"][0], "frame_index": first["frame_index"][0], "meta": first["meta"][0]}, views=("left",))
    ranks = []
    for rank in range(2):
        sampler = DistributedSampler(ds, num_replicas=2, rank=rank, shuffle=True, seed=5, drop_last=True)
        sampler.set_epoch(1)
        batches = DataLoader(ds, batch_size=3, sampler=sampler, collate_fn=collate)
        ranks.append([(m["key"], m["segment_id"]) for batch in batches for m in batch["meta"]])
    assert len(ranks[0]) == len(ranks[1]) == len(ds) // 2 and not set(ranks[0]) & set(ranks[1])


def test_open_files_are_bounded_and_per_process(map_dataset):
    ds = VideoShardMapDataset(map_dataset, load_rgb=False, load_kpt=True, open_shards=2)
    shards = len(json.load(open(os.path.join(map_dataset, "index.json")))["shardlist"])
    for i in range(len(ds)):
        ds[i]
        assert len(ds._local.state.handles.files) <= 2
    assert ds.stats["shards_opened"] == shards > 2  # items in shard order: each shard opened once
    ds[0]
    assert ds.stats["shards_opened"] == shards + 1  # its shard had been closed (least recently used)
    held = dict(ds._local.state.handles.files)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # a forked worker: it must open its own files, never read through the parent's
        ok = False
        try:
            ds[0]
            mine = ds._local.state.handles.files
            ok = all(mine.get(s) is not f for s, f in held.items()) and ds.stats["shards_opened"] == shards + 2
        finally:
            os.write(write, b"1" if ok else b"0")
            os._exit(0)
    os.waitpid(pid, 0)
    assert os.read(read, 1) == b"1"
    assert dict(ds._local.state.handles.files) == held and all(not f.closed for f in held.values())
    ds.close()
    assert all(f.closed for f in held.values())


@pytest.mark.parametrize("threads", [1, 2])
def test_a_forked_worker_collecting_its_parents_decoders_does_not_hang(map_dataset, threads):
    """A decoder the parent used and left in a reference cycle (an error's traceback holds
    one) is garbage that the collector frees in a forked DataLoader worker: freeing swscale's
    slice threads there waited forever on threads only the parent has (the weighted-sampler
    test hung that way). swscale now runs with decode_threads (1: no thread pool), and a
    decoder of another process keeps its swscale context (decode.ClipDecoder.__del__)."""
    ds = VideoShardMapDataset(map_dataset, views=("left",), img_size=(16, 16), decode_threads=threads)
    ds[0]
    cycle: list = [ds]
    cycle.append(cycle)
    del ds, cycle
    gc.disable()  # the cycle stays uncollected until the child runs
    try:
        pid = os.fork()
        if pid == 0:
            gc.collect()
            os._exit(0)
        deadline = time.monotonic() + 30
        while not (done := os.waitpid(pid, os.WNOHANG))[0] and time.monotonic() < deadline:
            time.sleep(0.05)
        if not done[0]:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            pytest.fail("the forked child hung freeing its parent's decoder")
        assert os.waitstatus_to_exitcode(done[1]) == 0
    finally:
        gc.enable()


def test_pickled_dataset_carries_no_open_file_and_keeps_its_epoch(map_dataset):
    ds = VideoShardMapDataset(map_dataset, sample="clip", num_frames=3)
    ds.set_epoch(4)
    item = ds[2]
    assert ds._local.state.handles.files  # a file is open in this process ...
    copy = pickle.loads(pickle.dumps(ds))  # ... and pickling does not try to send it
    assert getattr(copy._local, "state", None) is None and copy.epoch == 4
    same_item(copy[2], item)
    copy.set_epoch(5)
    assert ds.epoch == 4  # a copy, not the shared value of a worker


def test_spawned_persistent_workers_see_set_epoch(map_dataset):
    """A notebook on macOS starts workers with spawn: the dataset is pickled to them."""
    ds = VideoShardMapDataset(map_dataset, sample="clip", num_frames=3, views=("front",))
    ds[0]  # open files in the main process first
    loader = DataLoader(ds, batch_size=len(ds), num_workers=1, persistent_workers=True, collate_fn=collate,
                        multiprocessing_context="spawn")
    windows = []
    for epoch in (0, 1):
        ds.set_epoch(epoch)
        batch = next(iter(loader))
        windows.append(batch["frame_index"].tolist())
        expected = [ds[i]["frame_index"].tolist() for i in range(len(ds))]
        assert windows[-1] == expected
    assert windows[0] != windows[1]


@pytest.mark.parametrize("cached", [False, True])
def test_random_access_from_s3(map_dataset, s3_server, tmp_path, monkeypatch, cached):
    upload(map_dataset, "map", s3_server)
    use_endpoint(s3_server)
    requests = []
    get = RangeReader._get

    def counted(self, start, end, *rest):
        requests.append((start, end))
        return get(self, start, end, *rest)

    monkeypatch.setattr(RangeReader, "_get", counted)
    kw = dict(sample="segment", num_frames=3)
    local = VideoShardMapDataset(map_dataset, **kw)
    ds = VideoShardMapDataset("s3://vidshard/map/", cache_dir=str(tmp_path / "cache") if cached else None, **kw)
    index = json.load(open(os.path.join(map_dataset, "index.json")))
    filesize = {sh["url"]: sh["filesize"] for sh in index["shardlist"]}
    for i in np.random.default_rng(8).choice(len(ds), size=5, replace=False).tolist():
        requests.clear()
        got, want = ds[i], local[i]
        assert got["meta"].pop("shard").startswith("s3://vidshard/map/shard-")
        want["meta"].pop("shard")
        same_item(got, want)
        check_pixels(got)
        shard, key, _ = local.locate(i)
        entry = next(s for sh in index["shardlist"] for s in sh["samples"] if s["key"] == key)
        if not cached:  # one ranged read of the sample's bytes, nothing else of the shard
            assert requests == [(entry["offset"], entry["offset"] + entry["size"])]
        else:  # a shard not cached yet is downloaded whole, once; then read from the local copy
            assert requests in ([], [(0, filesize[os.path.basename(shard)])])
    if cached:
        assert ds.stats["cache_downloads"] >= 1 and len(os.listdir(tmp_path / "cache")) >= 1
    else:
        assert not any(k.startswith("cache") for k in ds.stats)


def test_random_access_from_s3_in_forked_workers(map_dataset, s3_server):
    """The parent reads from S3 first (its fsspec client and event-loop thread exist when the
    workers fork): each worker must make its own and deliver every item once, as from disk."""
    upload(map_dataset, "map-fork", s3_server)
    use_endpoint(s3_server)
    kw = dict(sample="segment", num_frames=2, views=("left",), img_size=(16, 16))
    ds = VideoShardMapDataset("s3://vidshard/map-fork/", **kw)
    ds[0]
    loader = DataLoader(ds, batch_size=4, shuffle=True, num_workers=2, collate_fn=collate, timeout=60,
                        generator=torch.Generator().manual_seed(5))
    seen, first = drain(loader)
    assert sorted(seen) == every_item(VideoShardMapDataset(map_dataset, **kw))
    check_pixels({"video": first["video"][0], "frame_index": first["frame_index"][0], "meta": first["meta"][0]}, views=("left",))


def test_a_bad_sample_in_a_worker_reaches_the_main_process_typed_and_named(map_dataset, tmp_path):
    broken = str(tmp_path / "broken")
    shutil.copytree(map_dataset, broken)
    ds = VideoShardMapDataset(broken, views=("left",))
    shard, key = spoil_clip(ds, 2, "left")
    loader = DataLoader(ds, batch_size=1, sampler=[0, 2], num_workers=1, collate_fn=collate, timeout=60)
    with pytest.raises(DecodeError) as info:  # torch rebuilds the worker's error from its message: the type stays
        list(loader)
    assert f"shard={shard}, key={key}, member={key}.left.mp4, view=left" in str(info.value)


def test_a_cache_that_cannot_hold_the_shards_read_is_not_used(map_dataset, tmp_path, caplog):
    """Random order through a cache smaller than the shards it reads downloaded a whole shard
    for every access (open_shards=1, cache at half the dataset): such a cache is refused with
    a warning and items are read by range; one that holds them downloads each shard once."""
    shards = json.load(open(os.path.join(map_dataset, "index.json")))["shardlist"]
    mine = [sh["filesize"] for sh in shards if any(s["key"].startswith("session_001_") for s in sh["samples"])]
    assert 1 < len(mine) < len(shards)
    order = np.random.default_rng(4).permutation(3 * 4)
    kw = dict(load_rgb=False, load_kpt=True, open_shards=1)
    with caplog.at_level(logging.WARNING, logger="vidshard.streaming"):
        small = VideoShardMapDataset(map_dataset, cache_dir=str(tmp_path / "small"), cache_limit=sum(mine) - 1,
                                     videos=["session_001"], **kw)
    for i in np.concatenate([order % len(small)] * 2).tolist():
        small[i]
    assert small.stats["cache_downloads"] == 0 and not os.listdir(tmp_path / "small"), dict(small.stats)
    assert "reading by range, without the cache" in caplog.text
    caplog.clear()
    enough = VideoShardMapDataset(map_dataset, cache_dir=str(tmp_path / "enough"), cache_limit=sum(mine),
                                  videos=["session_001"], **kw)  # the shards of session_001 only: they fit
    for i in np.concatenate([order % len(enough)] * 2).tolist():
        enough[i]
    assert enough.stats["cache_downloads"] == len(mine) and not caplog.text


def test_threads_calling_ds_at_once_each_have_their_own_decoder_and_files(map_dataset, monkeypatch):
    """A thread pool over ds[i]: with one decoder and one LRU of open files per process, two
    threads resized into the same swscale context and buffer (a barcode came out garbled
    within 600 items) and one thread's eviction closed a file another was reading."""
    used = collections.defaultdict(set)  # decoder -> the threads that decoded with it
    decode = ClipDecoder.decode

    def traced(self, *args, **kwargs):
        used[id(self)].add(threading.get_ident())
        time.sleep(0.002)  # threads overlap inside the decoder
        return decode(self, *args, **kwargs)

    monkeypatch.setattr(ClipDecoder, "decode", traced)
    ds = VideoShardMapDataset(map_dataset, sample="segment", num_frames=4, img_size=(24, 24), open_shards=1)
    order = np.random.default_rng(6).integers(0, len(ds), 96).tolist()
    with ThreadPoolExecutor(4) as pool:
        items = list(pool.map(ds.__getitem__, order))
    for i, item in zip(order, items):
        assert item["meta"]["key"] == ds.locate(i)[1]
        check_pixels(item)
    assert len(used) > 1 and all(len(threads) == 1 for threads in used.values()), used
