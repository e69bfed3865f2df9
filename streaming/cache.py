"""A local shard cache shared by every worker and process on a node, bounded in bytes.

    <cache_dir>/<sha256>.tar        complete shards (content-addressed by index.json's sha256)
    <cache_dir>/<sha256>.partial    a download in progress (never read)
    <cache_dir>/<sha256>.reserve    its reserved size, counted against the limit until done
    <cache_dir>/<sha256>.lock       flock: one download per shard at a time
    <cache_dir>/.cache.lock         flock: eviction and reservations, one process at a time

Bytes in the folder never exceed `limit`: a download first reserves its full size, evicting
least-recently-used complete shards (mtime, refreshed on every use) under the cache lock. A
reservation whose owner died (its shard lock is free) is reclaimed. Downloads are written to
`.partial` and renamed when complete (and, with verify, when their sha256 matches).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Callable, Iterator

from .format import sha256_of


@contextlib.contextmanager
def _flock(path: str, blocking: bool = True) -> Iterator[bool]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)  # closing releases the lock


class ShardCache:
    def __init__(self, directory: str, limit: int, verify: bool = False):
        self.dir, self.limit, self.verify = directory, limit, verify
        os.makedirs(directory, exist_ok=True)

    def _path(self, name: str, ext: str) -> str:
        return os.path.join(self.dir, f"{name}.{ext}")

    def usage(self) -> int:
        """Bytes counted against the limit: complete shards plus reservations."""
        total = 0
        for entry in os.scandir(self.dir):
            if entry.name.endswith(".tar"):
                total += entry.stat().st_size
            elif entry.name.endswith(".reserve"):
                with contextlib.suppress(OSError, ValueError):
                    total += int(open(entry.path).read() or 0)
        return total

    def get(self, sha256: str, size: int, download: Callable[[str], None], stats) -> str | None:
        """Local path of the shard, downloading it with `download(partial_path)` if needed.
        None when the shard is larger than the whole cache (the caller streams it instead)."""
        final = self._path(sha256, "tar")
        if os.path.exists(final):
            os.utime(final)  # LRU: most recently used
            stats["cache_hits"] += 1
            return final
        if size > self.limit:
            return None
        with _flock(self._path(sha256, "lock")):  # one download of this shard at a time
            if os.path.exists(final):  # another worker fetched it while we waited
                os.utime(final)
                stats["cache_hits"] += 1
                return final
            self._reserve(sha256, size)
            partial = self._path(sha256, "partial")
            try:
                download(partial)
                if self.verify and _file_sha256(partial) != sha256:
                    raise OSError(f"downloaded shard does not match index.json's sha256 {sha256[:16]}...")
                os.replace(partial, final)
            finally:
                for ext in ("partial", "reserve"):
                    with contextlib.suppress(FileNotFoundError):
                        os.remove(self._path(sha256, ext))
            stats["cache_downloads"] += 1
            return final

    def _reserve(self, name: str, size: int) -> None:
        with _flock(os.path.join(self.dir, ".cache.lock")):
            self._reclaim_stale()
            complete = sorted((e for e in os.scandir(self.dir) if e.name.endswith(".tar")), key=lambda e: e.stat().st_mtime)
            while self.usage() + size > self.limit and complete:
                victim = complete.pop(0)
                with contextlib.suppress(FileNotFoundError):
                    os.remove(victim.path)  # an open reader keeps its file; the name is gone
            if self.usage() + size > self.limit:
                raise OSError(f"cache {self.dir}: {size} bytes do not fit beside other downloads under {self.limit}")
            with open(self._path(name, "reserve"), "w") as f:
                f.write(str(size))

    def _reclaim_stale(self) -> None:
        for entry in os.scandir(self.dir):
            if entry.name.endswith(".reserve"):
                name = entry.name[: -len(".reserve")]
                with _flock(self._path(name, "lock"), blocking=False) as free:
                    if free:  # nobody is downloading it: its owner died
                        for ext in ("partial", "reserve"):
                            with contextlib.suppress(FileNotFoundError):
                                os.remove(self._path(name, ext))



def _file_sha256(path: str) -> str:
    with open(path, "rb") as f:
        return sha256_of(f)[1]
