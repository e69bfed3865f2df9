"""Random access to samples: a few shard files kept open per thread, each sample read by
`pread` from its byte range.

`ShardHandles` keeps at most `size` open shard files (local shards, or shards' copies in
the cache), the least recently used closed first. They belong to the thread and process
that opened them: the map dataset makes its handles in each thread of each process on
first use there (`mapped.VideoShardMapDataset._process`), so a DataLoader worker forked
from a process that had files open opens its own, a thread never has a file closed under
it by another's eviction, and a pickled dataset carries none. Reads use `os.preadv` at
explicit offsets, never the file's shared position.
A remote shard without a cache has no handle: each access is one ranged read through the
process's fsspec client (`ranges.open_range`).
"""

from __future__ import annotations

import collections
import io
from collections.abc import Callable
from typing import BinaryIO

from .errors import DatasetRefused
from .ranges import file_range, open_local
from .reading import SampleReader
from .remote import protocol_of

OPEN_SHARDS = 8  # files kept open per thread (one per DataLoader worker) by default


class ShardHandles:
    """Open shard files of this process, keyed by shard number; least recently used out first."""

    def __init__(self, size: int = OPEN_SHARDS):
        if not isinstance(size, int) or isinstance(size, bool) or size < 1:
            raise DatasetRefused(f"open_shards must be >= 1, got {size}")
        self.size = size
        self.files: collections.OrderedDict[int, BinaryIO] = collections.OrderedDict()

    def get(self, shard: int, open_file: Callable[[], BinaryIO | None]) -> BinaryIO | None:
        """The shard's open file, opened with `open_file()` when not held (None: none to hold)."""
        f = self.files.get(shard)
        if f is not None:
            self.files.move_to_end(shard)
            return f
        f = open_file()
        if f is None:
            return None
        self.files[shard] = f
        while len(self.files) > self.size:
            _, oldest = self.files.popitem(last=False)
            oldest.close()
        return f

    def drop(self, shard: int) -> None:
        """Close the shard's file, if held (its cache copy was found damaged)."""
        f = self.files.pop(shard, None)
        if f is not None:
            f.close()

    def close(self) -> None:
        for f in self.files.values():
            f.close()
        self.files = collections.OrderedDict()


class HandleReader(SampleReader):
    """The streaming reader's checks and errors, reading through this process's handles."""

    def __init__(self, *, handles: ShardHandles, **kwargs):
        super().__init__(**kwargs)
        self.handles = handles

    def _open(self, shard: int, offset: int, length: int) -> io.BufferedReader:
        f = self.handles.get(shard, lambda: self._open_file(shard))
        if f is None:
            return self._by_url(shard, offset, length)
        return file_range(f, offset, length)  # the file stays held: not closed with the range

    def recover(self, shard: int) -> bool:
        if not super().recover(shard):
            return False
        self.handles.drop(shard)  # the damaged copy's file: the next read opens the new one
        return True

    def _open_file(self, shard: int) -> BinaryIO | None:
        """A file to hold: the cached copy when there is a cache, the shard itself when it is
        local; None for a remote shard read by range."""
        if self.cache is not None:
            return self.cached(shard)  # None: not cacheable now, read by range
        url = self.urls[shard]
        if protocol_of(url) != "file":
            return None
        f = open_local(url)  # held by ShardHandles
        self.stats["shards_opened"] += 1
        return f
