"""Shard assembly: spooled chunk samples -> tar shards, in the seeded interleaved order.

One deterministic place, run on the driver after every video task has finished. Each
shard is written as `.shard-NNNNNN.tar.partial` in a local staging folder and published
(renamed into OUTPUT, or uploaded) when complete, so a reader never sees a partial shard;
a shard already published (by a killed earlier run with the same configuration) is kept. Member tar headers are fixed (mtime 0,
owner vidshard, mode 0444) and members sorted, so the same input gives the same bytes.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator

import webdataset as wds

from streaming.format import SampleEntry, ShardEntry

from .errors import WriterError
from .plan import interleave, plan_shards
from .store import file_digest
from .task import ChunkRecord, VideoResult, video_dir

SHARD_NAME = "shard-{:06d}.tar"


def order_samples(results: list[VideoResult], seed: int) -> list[tuple[str, ChunkRecord]]:
    """(video_id, chunk) in shard order: all chunks of all videos, interleaved by seed."""
    by_key = {c.key: (r.video_id, c) for r in results for c in r.chunks}
    return [by_key[k] for k in interleave(list(by_key), seed)]


def write_shards(
    store, staging: str, spool_dir: str, ordered: list[tuple[str, ChunkRecord]], shard_bytes: int, progress=None
) -> list[ShardEntry]:
    """Write (or keep) every shard and describe it for the manifest.

    A shard is assembled in `staging`, hashed, then published to the store; its manifest
    entry is kept in `staging` so a resumed job need not fetch published shards again.
    """
    plan = plan_shards([c.tar_bytes for _, c in ordered], shard_bytes)
    entries = []
    for index, span in enumerate(plan):
        samples = [ordered[i] for i in span]
        name = SHARD_NAME.format(index)
        record = os.path.join(staging, name + ".json")
        if store.exists(name):
            size, sha = _recorded(record) or store.digest(name)
        else:
            partial = os.path.join(staging, "." + name + ".partial")
            _write_shard(partial, spool_dir, samples)
            size, sha = file_digest(partial)
            store.publish(partial, name)
        with open(record, "w") as f:
            json.dump([size, sha], f)
        entries.append(_describe(name, size, sha, samples))
        _release_spool(spool_dir, samples)
        if progress is not None:
            progress.update(1)
    return entries


def _recorded(path: str) -> tuple[int, str] | None:
    try:
        with open(path) as f:
            size, sha = json.load(f)
        return size, sha
    except (FileNotFoundError, ValueError):
        return None


def _write_shard(partial: str, spool_dir: str, samples: list[tuple[str, ChunkRecord]]) -> None:
    try:
        with open(partial, "wb") as f:
            writer = wds.TarWriter(f, user="vidshard", group="vidshard", mode=0o444, mtime=0, encoder=False)
            for sample in _read_samples(spool_dir, samples):
                writer.write(sample)
            writer.close()
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        if os.path.exists(partial):
            os.remove(partial)  # e.g. a full disk: leave room, and nothing half-written
        raise


def _read_samples(spool_dir: str, samples: list[tuple[str, ChunkRecord]]) -> Iterator[dict]:
    for video_id, chunk in samples:
        folder = video_dir(spool_dir, video_id)
        sample: dict = {"__key__": chunk.key}
        for suffix in chunk.members:
            path = os.path.join(folder, f"{chunk.key}.{suffix}")
            try:
                with open(path, "rb") as f:
                    sample[suffix] = f.read()
            except FileNotFoundError:
                raise WriterError(
                    f"{path}: spooled member missing while its shard is not written yet; "
                    "the work folder was changed by hand: write into a new OUTPUT"
                ) from None
        yield sample


def _release_spool(spool_dir: str, samples: list[tuple[str, ChunkRecord]]) -> None:
    """Delete members once their shard exists: the spool never holds a second full copy."""
    for video_id, chunk in samples:
        for suffix in chunk.members:
            path = os.path.join(video_dir(spool_dir, video_id), f"{chunk.key}.{suffix}")
            if os.path.exists(path):
                os.remove(path)


def _describe(name: str, size: int, sha: str, samples: list[tuple[str, ChunkRecord]]) -> ShardEntry:
    entries, offset = [], 0
    for _, chunk in samples:
        entries.append(
            SampleEntry(key=chunk.key, offset=offset, size=chunk.tar_bytes, nframes=chunk.end - chunk.start, nsegments=chunk.nsegments)
        )
        offset += chunk.tar_bytes
    return ShardEntry(
        url=name,
        nsamples=len(samples),
        nsegments=sum(e.nsegments for e in entries),
        nframes=sum(e.nframes for e in entries),
        filesize=size,
        sha256=sha,
        samples=entries,
    )
