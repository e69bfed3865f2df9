"""The shard task: one planned shard -> its tar, published straight to OUTPUT.

It reads its samples' fragments from the spool (in plan order), checks each one against
the plan (spool.copy_fragment: only that sample's members, framed exactly, of the size the
encode task recorded), streams them into the store (a `.partial` file renamed into place,
or a multipart upload completed only at the end), hashing as it goes, and returns the
shard's manifest entry. The entry is also kept as `shards/<name>.json` in the work store
before the fragments are deleted, so a task run again (a retry, a resumed job) returns it
without reading the shard; a shard published by a task killed before that record is
simply written again, with the same bytes.
"""

from __future__ import annotations

import dataclasses
import json

from streaming.format import SampleEntry, ShardEntry, dumps

from .errors import WriterError
from .spool import copy_fragment, end_of_archive, fragment_name, new_digest
from .store import open_store

SHARD_NAME = "shard-{:06d}.tar"


@dataclasses.dataclass(frozen=True, kw_only=True)
class PlannedSample:
    key: str
    size: int  # bytes of its fragment, as the encode task wrote it
    nframes: int
    nsegments: int
    segments: list[list]  # [label, frames] per timeline segment (SampleEntry.segments)


@dataclasses.dataclass(frozen=True, kw_only=True)
class ShardTask:
    index: int
    output: str  # URL or folder of OUTPUT
    work: str  # URL or folder of the work store
    samples: tuple[PlannedSample, ...]  # in shard order
    part_bytes: int  # multipart part size for object stores

    @property
    def name(self) -> str:
        return SHARD_NAME.format(self.index)


def record_name(shard: str) -> str:
    return f"shards/{shard}.json"


def entry_from_json(obj: dict) -> ShardEntry:
    return ShardEntry(**{**obj, "samples": [SampleEntry(**s) for s in obj["samples"]]})


def run_shard_task(task: ShardTask) -> ShardEntry:
    work = open_store(task.work)
    record = record_name(task.name)
    if work.exists(record):
        return entry_from_json(json.loads(work.read(record)))
    if not task.samples:
        raise WriterError(f"{task.name}: a shard with no samples was planned")
    digest = new_digest()
    entries, offset = [], 0
    with open_store(task.output).create(task.name, task.part_bytes) as out:
        for sample in task.samples:
            where = f"{task.work} {fragment_name(sample.key)}"
            try:
                src = work.open(fragment_name(sample.key))
            except FileNotFoundError:
                raise WriterError(
                    f"{where}: spooled sample missing while its shard {task.name} is not written yet; "
                    "the work area was changed by hand: write into a new OUTPUT"
                ) from None
            with src:
                size = copy_fragment(src, out, digest, sample.key, where)
            if size != sample.size:
                raise WriterError(f"{where}: {size} bytes, its encode task wrote {sample.size}")
            entries.append(SampleEntry(key=sample.key, offset=offset, size=size, nframes=sample.nframes,
                                       nsegments=sample.nsegments, segments=sample.segments))
            offset += size
        tail = end_of_archive(offset)
        out.write(tail)
        digest.update(tail)
    entry = ShardEntry(
        url=task.name,
        nsamples=len(entries),
        nsegments=sum(e.nsegments for e in entries),
        nframes=sum(e.nframes for e in entries),
        filesize=offset + len(tail),
        sha256=digest.hexdigest(),
        samples=entries,
    )
    work.write(record, dumps(dataclasses.asdict(entry)))
    for sample in task.samples:  # the spool never keeps a second copy of a published shard
        work.delete(fragment_name(sample.key))
    return entry

