"""The read path's middle stages, a window's (shard, sample) pairs -> byte ranges -> checked
tar members -> samples:

    runs()          byte ranges: consecutive samples of one shard whose ranges (index.json)
                    follow each other are one run, fetched with one open and one sequential read
    _open()         the run's bytes: the cache copy, the local file or the URL (ranges.open_range);
                    only its typed errors (a missing or forbidden shard) are the samples' errors
    _sample()       each sample parsed from exactly its own range (tario.read_sample: the checked
                    tar members), its remaining bytes passed over

One error policy through the stages (`_caught`): a failure is a value, the SampleError of the
sample it concerns, and the caller applies its `on_error` policy to each item. A sample whose
bytes are bad costs only itself: the next one is read. A read that fails after its retries
(ShardReadError) breaks the stream: the run's remaining samples are not read, and each gets
an error naming its key. Only a StorageError (a server that cannot serve byte ranges) is
raised: no sample of it can be read.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import os
from collections import Counter
from collections.abc import Callable, Iterator
from typing import TypeVar

from .cache import ShardCache
from .errors import SampleError, ShardReadError
from .format import Manifest, SampleEntry
from .ranges import download, open_range
from .remote import StorageOptions, redact
from .tario import Limits, Span, read_sample

log = logging.getLogger("vidshard.streaming")
Read = dict | SampleError  # a sample's wanted members ({"__key__", suffix: bytes}), or why it cannot be read
T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class Run:
    """Samples `first`, `first + 1`, ... of a shard, stored back to back in [start, end)."""

    shard: int
    samples: list[int]
    start: int
    end: int


def runs(manifest: Manifest, pairs: list[tuple[int, int]]) -> Iterator[Run]:
    """The (shard, sample) pairs, in order, cut into runs of adjacent byte ranges."""
    i = 0
    while i < len(pairs):
        shard, first = pairs[i]
        samples = manifest.shards[shard].samples
        j = i + 1
        while (j < len(pairs) and pairs[j] == (shard, first + (j - i))
               and samples[first + j - i].offset == samples[first + j - i - 1].offset + samples[first + j - i - 1].size):
            j += 1
        last = samples[first + j - i - 1]
        yield Run(shard, list(range(first, first + (j - i))), samples[first].offset, last.offset + last.size)
        i = j


def _caught(step: Callable[[], T], url: str) -> T | SampleError:
    """`step()`, or the SampleError it failed with: the read path's one error policy. An
    OSError out of a stream is a broken read (ShardReadError); a StorageError is raised."""
    try:
        return step()
    except SampleError as exc:
        return exc
    except OSError as exc:
        return ShardReadError(f"read failed ({redact(str(exc))[:300]})", shard=url)


class SampleReader:
    def __init__(self, *, manifest: Manifest, urls: list[str], storage: StorageOptions, cache: ShardCache | None,
                 limits: Limits, want: Callable[[str], bool], member_limit: Callable[[SampleEntry, str], int | None],
                 stats: Counter):
        self.manifest, self.urls, self.storage, self.cache = manifest, urls, storage, cache
        self.limits, self.want, self.member_limit, self.stats = limits, want, member_limit, stats
        self.from_cache: dict[int, tuple[int, int]] = {}  # shard -> the cache copy this reader last opened (device, inode)

    def read(self, pairs: list[tuple[int, int]]) -> dict[tuple[int, int], Read]:
        """Every (shard, sample) pair -> its sample or its error."""
        out: dict[tuple[int, int], Read] = {}
        for run in runs(self.manifest, pairs):
            for index, sample in zip(run.samples, self._read_run(run)):
                out[run.shard, index] = sample
                if not isinstance(sample, SampleError):
                    self.stats["bytes_read"] += sum(len(v) for name, v in sample.items() if name != "__key__")
        return out

    def _read_run(self, run: Run) -> Iterator[Read]:
        """A sample or an error for each sample of the run, in order."""
        entries = [self.manifest.shards[run.shard].samples[i] for i in run.samples]
        url = redact(self.urls[run.shard])
        try:
            # Only the typed verdicts of opening (open_local: missing, forbidden; a URL's
            # reads fail later, in _sample) are the run's errors: an OSError here is this
            # process's own (EMFILE, ENOMEM, EIO on the local disk), not the samples', and
            # stops the job rather than be skipped as bad samples.
            stream = self._open(run.shard, run.start, run.end - run.start)
        except SampleError as exc:
            yield from (exc.at(key=entry.key) for entry in entries)
            return
        with stream:
            for k, entry in enumerate(entries):
                sample = self._sample(stream, entry, url)
                yield sample
                if isinstance(sample, ShardReadError):  # the stream broke: the rest of the run is not read
                    yield from (ShardReadError(f"not read: an earlier sample of its run failed to read ({sample.message})",
                                               shard=url, key=later.key) for later in entries[k + 1:])
                    return

    def _sample(self, stream: io.BufferedReader, entry: SampleEntry, url: str) -> Read:
        """One sample from exactly its own span of the stream, or its error; then the stream
        stands at the next sample's first byte (unless it broke: a ShardReadError)."""
        span = Span(stream, entry.size, url)
        sample = _caught(lambda: read_sample(span, url, entry.key, self.limits, self.want,
                                             lambda suffix: self.member_limit(entry, suffix)), url)
        if not isinstance(sample, ShardReadError):
            broken = _caught(span.drain, url)  # pass over what a bad sample left unread
            sample = sample if broken is None else broken
        return sample.at(key=entry.key) if isinstance(sample, SampleError) else sample

    def _open(self, shard: int, offset: int, length: int) -> io.BufferedReader:
        """A stream over [offset, offset + length) of a shard: from the local cache when one
        is configured and the shard fits (downloading it whole once), else from its URL."""
        local = self.cached(shard)
        if local is not None:
            return open_range(local, offset, length, self.storage, self.stats)
        return self._by_url(shard, offset, length)

    def _by_url(self, shard: int, offset: int, length: int) -> io.BufferedReader:
        # With a cache the user opted into whole-shard transfers: a shard it could not take,
        # from a server that ignores Range, is read from plain GETs rather than stopping.
        return open_range(self.urls[shard], offset, length, self.storage, self.stats, whole_get=self.cache is not None)

    def cached(self, shard: int) -> io.BufferedReader | None:
        """The shard's copy in the cache, open (downloaded whole first when missing), or None:
        no cache, the shard does not fit, or the cache's own disk fails (read by range)."""
        if self.cache is None:
            return None
        url, entry = self.urls[shard], self.manifest.shards[shard]
        try:
            copy = self.cache.open(entry.sha256, entry.filesize,
                                   lambda dst: download(url, entry.filesize, dst, self.storage, self.stats), self.stats)
            if copy is not None:
                st = os.fstat(copy.fileno())
                self.from_cache[shard] = (st.st_dev, st.st_ino)
            return copy
        except OSError as exc:  # the cache's own disk (full, read-only): read past it
            self.stats["cache_errors"] += 1
            log.warning("cache %s: %s; reading %s by range", self.cache.dir, exc, redact(url))
            return None

    def recover(self, shard: int) -> bool:
        """After a sample of `shard` failed its checks: whether it was read from a cache copy
        that is damaged (hashed: dropped) or that another process replaced or removed since
        this reader opened it (a worker that found it damaged, or evicted it). Then read the
        sample again: the shard is fetched again. An intact copy leaves the error standing
        (each copy is hashed at most once per process: ShardCache.check_copy); so does a
        cache whose disk fails here (counted, logged)."""
        if self.cache is None or shard not in self.from_cache:
            return False
        entry, url = self.manifest.shards[shard], redact(self.urls[shard])
        try:
            if self.cache.identity(entry.sha256) != self.from_cache[shard]:
                log.info("the cache copy of %s was replaced or removed while this process read it: reading the shard again", url)
                return True
            damage = self.cache.check_copy(entry.sha256, entry.filesize)
        except OSError as exc:
            self.stats["cache_errors"] += 1
            log.warning("cache %s: %s; not checking the copy of %s", self.cache.dir, exc, url)
            return False
        if damage is None:
            return False
        self.stats["cache_damaged"] += 1
        log.warning("the cache copy of %s is damaged (%s): dropped, reading the shard again", url, damage)
        return True
