"""Reading a window's samples: every failure becomes that sample's own error.

Samples are read in runs: consecutive samples of one shard whose byte ranges (index.json)
follow each other are fetched with one open and one sequential read. Inside a run each
sample is parsed from exactly its own range (a `Span`), so a bad sample costs only itself:
its error is kept, its remaining bytes are passed over, and the next sample is read. A read
that fails after its retries breaks the stream: the run's remaining samples are not read
and each gets an error naming its key. Nothing here raises a SampleError: the caller sees
the errors sample by sample and applies its `on_error` policy to each item. A StorageError
(a server that cannot serve byte ranges) is raised: no sample of it can be read.
"""

from __future__ import annotations

import io
import logging
import os
from collections import Counter
from collections.abc import Callable

from .cache import ShardCache
from .errors import SampleError, ShardReadError, StorageError
from .format import Manifest, SampleEntry
from .norange import WholeGetReader
from .remote import StorageOptions, open_range, redact
from .wholefile import download
from .tario import Limits, Span, read_sample

log = logging.getLogger("vidshard.streaming")
Read = dict | SampleError  # a sample's wanted members ({"__key__", suffix: bytes}), or why it cannot be read


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
        i = 0
        while i < len(pairs):
            shard, first = pairs[i]
            samples = self.manifest.shards[shard].samples
            j = i + 1
            while (j < len(pairs) and pairs[j] == (shard, first + (j - i))
                   and samples[first + j - i].offset == samples[first + j - i - 1].offset + samples[first + j - i - 1].size):
                j += 1
            self._read_run(shard, list(range(first, first + (j - i))), out)
            i = j
        return out

    def _read_run(self, shard: int, indices: list[int], out: dict) -> None:
        entries = [self.manifest.shards[shard].samples[i] for i in indices]
        url = redact(self.urls[shard])
        start, end = entries[0].offset, entries[-1].offset + entries[-1].size
        try:
            stream = self._open(shard, start, end - start)
        except SampleError as exc:
            for index, entry in zip(indices, entries):
                out[shard, index] = exc.at(key=entry.key)
            return
        with stream:
            for k, (index, entry) in enumerate(zip(indices, entries)):
                span = Span(stream, entry.size, url)
                try:
                    try:
                        sample = read_sample(span, url, entry.key, self.limits, self.want,
                                             lambda suffix, e=entry: self.member_limit(e, suffix))
                    except ShardReadError:
                        raise
                    except SampleError as exc:  # this sample's bytes are bad: pass over them, read the next
                        sample = exc
                    span.drain()
                except StorageError:
                    raise
                except (ShardReadError, OSError) as exc:  # the stream broke: the rest of the run is not read
                    error = exc if isinstance(exc, ShardReadError) else ShardReadError(f"read failed ({exc})", shard=url)
                    out[shard, index] = error.at(key=entry.key)
                    for later_index, later in zip(indices[k + 1:], entries[k + 1:]):
                        out[shard, later_index] = ShardReadError(f"not read: an earlier sample of its run failed to read "
                                                                 f"({error.message})", shard=url, key=later.key)
                    return
                out[shard, index] = sample
                if not isinstance(sample, SampleError):
                    self.stats["bytes_read"] += sum(len(v) for name, v in sample.items() if name != "__key__")

    def _open(self, shard: int, offset: int, length: int) -> io.BufferedReader:
        """A stream over [offset, offset + length) of a shard: from the local cache when one
        is configured and the shard fits (downloading it whole once), else from its URL."""
        local = self.cached(shard)
        if local is not None:
            return open_range(local, offset, length, self.storage, self.stats)
        # With a cache the user opted into whole-shard transfers: a shard it could not take,
        # from a server that ignores Range, is read from a plain GET rather than stopping.
        return open_range(self.urls[shard], offset, length, self.storage, self.stats,
                          whole_get=WholeGetReader if self.cache is not None else None)

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
        except StorageError:
            raise
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
