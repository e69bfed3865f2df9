"""Shard assembly: spooled chunk samples -> tar shards, in the seeded interleaved order.

One deterministic place, run on the driver after every video task has finished. Each
shard is written as `.shard-NNNNNN.tar.partial` and renamed when complete, so a reader
never sees a partial shard; a shard already present under its final name (from a killed
earlier run with the same configuration) is kept. Member tar headers are fixed (mtime 0,
owner vidshard, mode 0444) and members sorted, so the same input gives the same bytes.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator

import webdataset as wds

from streaming.format import SampleEntry, ShardEntry

from .errors import WriterError
from .plan import interleave, plan_shards
from .task import ChunkRecord, VideoResult, video_dir

SHARD_NAME = "shard-{:06d}.tar"


def shard_path(out_dir: str, index: int) -> str:
    return os.path.join(out_dir, SHARD_NAME.format(index))


def order_samples(results: list[VideoResult], seed: int) -> list[tuple[str, ChunkRecord]]:
    """(video_id, chunk) in shard order: all chunks of all videos, interleaved by seed."""
    by_key = {c.key: (r.video_id, c) for r in results for c in r.chunks}
    return [by_key[k] for k in interleave(list(by_key), seed)]


def write_shards(
    out_dir: str, spool_dir: str, ordered: list[tuple[str, ChunkRecord]], shard_bytes: int, progress=None
) -> list[ShardEntry]:
    """Write (or keep) every shard and describe it for the manifest."""
    plan = plan_shards([c.tar_bytes for _, c in ordered], shard_bytes)
    entries = []
    for index, span in enumerate(plan):
        samples = [ordered[i] for i in span]
        final = shard_path(out_dir, index)
        if not os.path.exists(final):
            _write_shard(final, spool_dir, samples)
        entries.append(_describe(final, samples))
        _release_spool(spool_dir, samples)
        if progress is not None:
            progress.update(1)
    return entries


def _write_shard(final: str, spool_dir: str, samples: list[tuple[str, ChunkRecord]]) -> None:
    partial = os.path.join(os.path.dirname(final), "." + os.path.basename(final) + ".partial")
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
    os.replace(partial, final)


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


def _describe(path: str, samples: list[tuple[str, ChunkRecord]]) -> ShardEntry:
    entries, offset = [], 0
    for _, chunk in samples:
        entries.append(
            SampleEntry(key=chunk.key, offset=offset, size=chunk.tar_bytes, nframes=chunk.end - chunk.start, nsegments=chunk.nsegments)
        )
        offset += chunk.tar_bytes
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return ShardEntry(
        url=os.path.basename(path),
        nsamples=len(samples),
        nsegments=sum(e.nsegments for e in entries),
        nframes=sum(e.nframes for e in entries),
        filesize=os.path.getsize(path),
        sha256=digest.hexdigest(),
        samples=entries,
    )
