"""Shuffle quality and resume planning, from the pure epoch plan (no files), and items/s of
each shuffle scheme from local disk and from a local S3 server (moto, in its own process).

Quality: batches are formed per worker as a DataLoader does (each worker's items in yield
order, `batch` at a time). The pair-repeat rate is the fraction of item pairs sharing a batch
in epoch 0 that share a batch again in epoch 1; a global shuffle repeats a pair with
probability sum_b s_b (s_b - 1) / (N (N - 1)) over the batch sizes s_b. Distinct shards per
batch count the shards a batch's items come from. Reads: runs of adjacent samples of one
shard read as one stream; ranged requests: those runs in 4 MiB requests (StorageOptions).

Beside vidshard's schemes, two models of other loaders under the same memory (a buffer of
as many samples as `buffer_bytes` holds), written here from their documented behaviour:
webdataset (shards shuffled and split over ranks and workers, read in order through a sample
buffer) and Megatron-Energon (16 shards per worker read in parallel, a random one at each
step, then the same sample buffer). They are models, not those libraries.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from fractions import Fraction

import numpy as np

from streaming.plan import Catalog, EpochPlan, PlanSpec, Progress, epoch_plan

MB = 10**6
REQUEST = 4 * 2**20  # StorageOptions.block_bytes


def worker_batches(plan: EpochPlan, batch: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(item ids, shards) of every batch of every (rank, worker); item id = file-order index."""
    catalog, order = plan.catalog, plan.order
    base = np.cumsum(catalog.items) - catalog.items
    out = []
    for rank in range(plan.spec.world_size):
        for worker in range(plan.spec.num_workers):
            windows = plan.windows(rank, worker)
            if not windows:
                continue
            pos = np.concatenate([w.positions for w in windows])
            ids = base[catalog.first_sample[order.shard[pos]] + order.sample[pos]] + order.sub[pos]
            out += [(ids[i : i + batch], order.shard[pos[i : i + batch]]) for i in range(0, len(ids), batch)]
    return out


def _pairs(batches: list[tuple[np.ndarray, np.ndarray]], n: int) -> np.ndarray:
    codes = []
    for ids, _ in batches:
        a, b = np.meshgrid(ids, ids, indexing="ij")
        keep = a < b
        codes.append(a[keep] * n + b[keep])
    return np.unique(np.concatenate(codes)) if codes else np.zeros(0, np.int64)


def batch_quality(first: list, second: list, total: int) -> dict:
    """Pair repeats from `first` (epoch 0's batches) to `second` (epoch 1's)."""
    p0, p1 = _pairs(first, total), _pairs(second, total)
    sizes = np.array([len(ids) for ids, _ in second], dtype=np.float64)
    glob = float((sizes * (sizes - 1)).sum() / (total * (total - 1)))
    repeat = len(np.intersect1d(p0, p1, assume_unique=True)) / max(1, len(p0))
    return {"pair_repeat": repeat, "global_pair_repeat": glob, "repeat_vs_global": repeat / glob,
            "shards_per_batch": float(np.mean([len(np.unique(s)) for _, s in first]))}


def _spec(epoch: int, world_size: int, num_workers: int, buffer_bytes: int, block_bytes: int | None, seed: int = 0) -> PlanSpec:
    return PlanSpec(epoch=epoch, seed=seed, shuffle=True, drop_last=False, buffer_bytes=buffer_bytes,
                    world_size=world_size, num_workers=num_workers, block_bytes=block_bytes)


def shuffle_quality(catalog: Catalog, *, world_size: int, num_workers: int, buffer_bytes: int,
                    block_bytes: int | None, batch: int, seed: int = 0) -> dict:
    def batches(epoch: int) -> list:
        return worker_batches(epoch_plan(catalog, _spec(epoch, world_size, num_workers, buffer_bytes, block_bytes, seed)), batch)

    return batch_quality(batches(0), batches(1), catalog.total_items)


def plan_reads(catalog: Catalog, spec: PlanSpec, request_bytes: int = REQUEST) -> dict:
    """Streams opened (runs of adjacent samples of one shard per window) and ranged requests in an epoch."""
    plan = epoch_plan(catalog, spec)
    runs = requests = 0
    for rank in range(spec.world_size):
        for worker in range(spec.num_workers):
            for window in plan.windows(rank, worker):
                pairs = np.array(window.samples(plan.order))
                new = np.ones(len(pairs), dtype=bool)
                new[1:] = (pairs[1:, 0] != pairs[:-1, 0]) | (pairs[1:, 1] != pairs[:-1, 1] + 1)
                size = catalog.nbytes(pairs[:, 0], pairs[:, 1])
                run_bytes = np.add.reduceat(size, np.flatnonzero(new))
                runs += len(run_bytes)
                requests += int(np.ceil(run_bytes / request_bytes).sum())
    return {"reads": runs, "requests": requests}


# -- models of other loaders' shuffles, same memory ----------------------------------------

def _buffered(stream: list[int], size: int, rng: np.random.Generator) -> list[int]:
    """A sample buffer of `size`: fill it, then yield a random element and put the next in its place."""
    buf, out = [], []
    for x in stream:
        if len(buf) < size:
            buf.append(x)
            continue
        k = int(rng.integers(len(buf)))
        out.append(buf[k])
        buf[k] = x
    rng.shuffle(buf)
    return out + buf


def _model_batches(catalog: Catalog, epoch: int, *, world_size: int, num_workers: int, buffer_samples: int, batch: int,
                   parallel: int, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    nshards = len(catalog.lengths)
    shards = np.random.default_rng([seed, epoch, 1]).permutation(nshards)
    parts = world_size * num_workers
    shard_of = np.repeat(np.arange(nshards), catalog.lengths)
    out = []
    for p in range(parts):
        rng = np.random.default_rng([seed, epoch, 2, p])
        mine = [int(s) for s in shards[p::parts]]  # split_by_node, then split_by_worker
        iters = [list(range(catalog.first_sample[s], catalog.first_sample[s] + catalog.lengths[s])) for s in mine]
        stream, open_, nxt = [], [], 0
        while open_ or nxt < len(iters):
            while len(open_) < parallel and nxt < len(iters):
                open_.append(iters[nxt][::-1])
                nxt += 1
            k = int(rng.integers(len(open_)))
            stream.append(open_[k].pop())
            if not open_[k]:
                open_.pop(k)
        ids = np.array(_buffered(stream, buffer_samples, rng), dtype=np.int64)
        out += [(ids[i : i + batch], shard_of[ids[i : i + batch]]) for i in range(0, len(ids), batch)]
    return out


def model_quality(catalog: Catalog, *, parallel: int, world_size: int, num_workers: int, buffer_bytes: int, batch: int) -> dict:
    samples = max(1, int(buffer_bytes // np.mean(catalog.sizes)))
    kw = dict(world_size=world_size, num_workers=num_workers, buffer_samples=samples, batch=batch, parallel=parallel)
    reads = int(len(catalog.lengths))
    requests = int(np.ceil(np.array([a.sum() for a in catalog.sample_bytes]) / REQUEST).sum())
    return {**batch_quality(_model_batches(catalog, 0, **kw), _model_batches(catalog, 1, **kw), len(catalog.sizes)),
            "reads": reads, "requests": requests}


# -- the report ----------------------------------------------------------------------------

CONFIGS = {
    # the configuration of issue 16
    "100 shards x 50 samples of 20 MB, 2 ranks x 4 workers": dict(shards=100, samples=50, size=20 * MB, world=(2, 4)),
    "500 shards x 100 samples of 1 MB, 8 ranks x 4 workers": dict(shards=500, samples=100, size=1 * MB, world=(8, 4)),
}
SCHEMES: list[tuple[str, int | None]] = [("vidshard shuffle_block=\"shard\" (before this change)", None),
                                         ("vidshard shuffle_block=\"16MB\"", 16 * MB),
                                         ("vidshard shuffle_block=\"8MB\"", 8 * MB),
                                         ("vidshard shuffle_block=\"4MB\" (about the default, \"auto\", at this buffer)", 4 * MB),
                                         ("vidshard shuffle_block=1 (one sample per block)", 1)]


def quality_table(buffer_bytes: int = 256 * MB, batch: int = 8) -> list[dict]:
    rows = []
    for config, c in CONFIGS.items():
        catalog = Catalog(sample_items=[np.ones(c["samples"], np.int64)] * c["shards"],
                          sample_bytes=[np.full(c["samples"], c["size"], np.int64)] * c["shards"])
        ranks, workers = c["world"]
        kw = dict(world_size=ranks, num_workers=workers, buffer_bytes=buffer_bytes, batch=batch)
        for name, block in SCHEMES:
            rows.append({"config": config, "scheme": name, **shuffle_quality(catalog, block_bytes=block, **kw),
                         **plan_reads(catalog, _spec(0, ranks, workers, buffer_bytes, block))})
        for name, parallel in (("model: webdataset, shard order + sample buffer", 1),
                               ("model: Energon, 16 shards in parallel + sample buffer", 16)):
            rows.append({"config": config, "scheme": name, **model_quality(catalog, parallel=parallel, **kw)})
    return rows


def resume_planning(shards: int = 10_000, samples: int = 100, ranks: int = 64, workers: int = 8) -> list[dict]:
    """Seconds to plan one worker's epoch, fresh and resumed 1-3 times (each partition of the
    level below stopped at a random point in its first 40%), on changing world shapes."""
    rng = np.random.default_rng(0)
    catalog = Catalog(sample_items=[np.ones(samples, np.int64)] * shards,
                      sample_bytes=[rng.integers(1 * MB, 4 * MB, samples) for _ in range(shards)])
    spec = _spec(0, ranks, workers, 256 * MB, 4 * MB)
    rows = []
    for depth in range(4):
        start = time.perf_counter()
        plan = epoch_plan(catalog, spec)
        plan.windows(ranks // 3, workers // 2)
        rows.append({"resumes": depth, "ranks": spec.world_size, "workers": spec.num_workers, "items_left": len(plan.sequence),
                     "plan_s": round(time.perf_counter() - start, 3)})
        yielded = {(r, w): int(len(plan.partition(r, w)[0]) * rng.uniform(0, 0.4))
                   for r in range(spec.world_size) for w in range(spec.num_workers)}
        shape = [(ranks, workers), (ranks // 2, workers), (ranks, workers // 2)][depth % 3]
        spec = dataclasses.replace(_spec(0, *shape, 256 * MB, 4 * MB), base=Progress(spec=spec, yielded=yielded))
    return rows


# -- items/s: local disk and a local S3 server, both schemes in the same run ------------------

# The configuration scaled down about 800 times: samples of ~25 KB (20 MB), a 256 KB
# buffer (256 MB: about 10 samples per window), 4 KB blocks (4 MB: one sample per block), and,
# for the "scaled" S3 source, 5 KiB ranged requests (4 MiB: a sample takes about 5 requests in
# either scheme, as it does at full size). The S3 source with 4 MiB requests keeps the real
# request size: there a block is a sample of 25 KB, far below one request, a regime the
# default's 4 MB blocks avoid; it shows what each extra request costs.
READ_SCHEMES = (("shard", "shard"), ("blocks", "4KB"))
BENCH_BUFFER = "256KB"
SCALED_REQUEST = 5 * 2**10


class BenchSetupError(RuntimeError):
    """What a bench case needs is missing or does not start; the message says what to install."""


# moto's S3 server, the client that uploads to it, and the reader's S3 filesystem: the
# `bench` extra (pyproject.toml), not a dependency of the library.
LOCAL_S3_MODULES = ("moto", "boto3", "s3fs")


def require_local_s3(what: str) -> None:
    """BenchSetupError naming the missing modules and the extra, before any work starts."""
    missing = [name for name in LOCAL_S3_MODULES if importlib.util.find_spec(name) is None]
    if missing:
        raise BenchSetupError(f"{what} reads from a local S3 server (moto), which needs {', '.join(missing)}: "
                              "pip install 'vidshard[bench]'")


@contextlib.contextmanager
def local_s3(root: str, prefix: str):
    """moto's S3 server in its own process, `root`'s files uploaded; yields the dataset URL."""
    require_local_s3("the local S3 bench")
    import boto3
    import s3fs

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    env = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}"}
    old = {k: os.environ.get(k) for k in env}
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise BenchSetupError("moto's S3 server did not start (python -m moto.server)") from None
                time.sleep(0.2)
        os.environ.update(env)
        s3fs.S3FileSystem.clear_instance_cache()
        client = boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"])
        client.create_bucket(Bucket="bench")
        for name in os.listdir(root):
            client.upload_file(os.path.join(root, name), "bench", f"{prefix}/{name}")
        yield f"s3://bench/{prefix}/"
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def paired_rounds(measure: Callable[[str], float], names: list[str], rounds: int) -> list[dict[str, float]]:
    """`rounds` rounds of every scheme measured once, back to back; the order alternates from
    round to round, so that neither scheme always runs first (colder caches, a server
    warming up) or second."""
    return [{name: measure(name) for name in (names if r % 2 == 0 else names[::-1])} for r in range(rounds)]


def _items_per_s(make: Callable[[], object], epochs: int) -> float:
    ds = make()
    count, start = 0, time.perf_counter()
    for epoch in range(epochs):
        ds.set_epoch(epoch)
        for _ in ds:
            count += 1
    return count / (time.perf_counter() - start)


def throughput(level: str) -> list[dict]:
    """items/s of one in-process reader per (source, mode, scheme). Each round runs the schemes
    back to back, in alternating order; the figures are medians over rounds, and `vs_shard`
    the median of each round's ratio, so a slower or busier moment of the machine hits both
    schemes alike."""
    from shardwriter.job import WriteConfig, write_dataset
    from streaming import VideoShardDataset
    from streaming.remote import StorageOptions
    from streaming.world import World
    from vidshard.synth import synth_source

    modes = {"chunk (decode)": dict(load_rgb=True), "keypoints only (reading)": dict(load_rgb=False, load_kpt=True)}
    epochs, rounds = {"full": (3, 7), "quick": (2, 2), "smoke": (1, 1)}[level]
    rows = []
    with tempfile.TemporaryDirectory(prefix="vidshard-shuffle-") as tmp:
        src, out = os.path.join(tmp, "src"), os.path.join(tmp, "out")
        synth_source(src, videos=4, frames=300, size=(64, 64), fps=Fraction(30))
        write_dataset(src, out, WriteConfig(max_video_frames=20, shard_bytes=300_000), workers=1)
        scaled = StorageOptions(block_bytes=SCALED_REQUEST)
        with local_s3(out, "ds") as s3:
            sources = [("local disk", out, None), ("S3 (moto), 4 MiB requests", s3, None),
                       ("S3 (moto), 5 KiB requests (scaled)", s3, scaled)]
            for source_name, url, storage in sources:
                for mode_name, kw in list(modes.items())[: 1 if level == "smoke" else None]:
                    def make(block: str, url=url, storage=storage, kw=kw) -> VideoShardDataset:
                        return VideoShardDataset(url, shuffle_buffer=BENCH_BUFFER, shuffle_block=block, storage=storage, **kw)

                    blocks = dict(READ_SCHEMES)
                    runs = paired_rounds(lambda name: _items_per_s(lambda: make(blocks[name]), epochs), list(blocks), rounds)
                    request = (storage or StorageOptions()).block_bytes
                    for name, block in READ_SCHEMES:
                        ds = make(block)
                        reads = plan_reads(ds.catalog, ds.spec(World()), request)
                        rows.append({"source": source_name, "mode": mode_name, "scheme": name,
                                     "items_per_s": round(float(np.median([r[name] for r in runs])), 1),
                                     "spread": [round(min(r[name] for r in runs), 1), round(max(r[name] for r in runs), 1)],
                                     "vs_shard": round(float(np.median([r[name] / r["shard"] for r in runs])), 3),
                                     "reads_per_epoch": reads["reads"], "requests_per_epoch": reads["requests"]})
    return rows


def report(level: str) -> dict:
    require_local_s3("the shuffle bench")
    return {"quality": quality_table(), "resume_planning": resume_planning(), "throughput": throughput(level)}


def markdown(result: dict) -> list[str]:
    lines = ["", "Shuffle quality (pure plan, 256 MB buffer, batches of 8 per worker, epoch 0 -> 1):", "",
             "| configuration | scheme | pair repeats | vs global shuffle | shards per batch | reads per epoch | 4 MiB requests per epoch |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['config']} | {r['scheme']} | {r['pair_repeat']:.3%} | {r['repeat_vs_global']:.1f}x | "
              f"{r['shards_per_batch']:.2f} | {r['reads']} | {r['requests']} |" for r in result["quality"]]
    lines += ["", "Resume planning, one worker (10,000 shards x 100 samples):", "",
              "| resumes | ranks x workers | items left | plan (s) |", "|---|---|---|---|"]
    lines += [f"| {r['resumes']} | {r['ranks']} x {r['workers']} | {r['items_left']} | {r['plan_s']:.3f} |"
              for r in result["resume_planning"]]
    lines += ["", f"Items/s by shuffle scheme (one process, 60 samples of ~25 KB in 6 shards; buffer {BENCH_BUFFER}, "
              f"blocks {READ_SCHEMES[1][1]}):", "",
              "| source | mode | scheme | items/s (median) | min - max | vs shard (median of rounds) | reads per epoch | "
              "requests per epoch |", "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['source']} | {r['mode']} | {r['scheme']} | {r['items_per_s']} | {r['spread'][0]} - {r['spread'][1]} | "
              f"{r['vs_shard']:.2f} | {r['reads_per_epoch']} | {r['requests_per_epoch']} |" for r in result["throughput"]]
    return lines


if __name__ == "__main__":
    print("\n".join(markdown(report("quick" if "--quick" in sys.argv else "full"))))
