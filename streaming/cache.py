"""A local shard cache shared by every worker and process on a node, bounded in bytes.

    <cache_dir>/<sha256>.tar        complete shards (content-addressed by index.json's sha256)
    <cache_dir>/<sha256>.partial    a download in progress (never read)
    <cache_dir>/<sha256>.reserve    its reserved size, counted against the limit until done
    <cache_dir>/<sha256>.lock       flock: one download per shard at a time
    <cache_dir>/.cache.lock         flock: eviction and reservations, one process at a time

The files in the folder never add up to more than `limit` bytes: a download first reserves
its full size, evicting least-recently-used complete shards (mtime, refreshed on every use)
under the cache lock. A download that does not fit beside the others (many workers
starting at once, a limit below their demand) is not an error: `open` returns None and the
caller reads the shard by range, uncached. A reservation whose owner died (its shard lock
is free) is reclaimed.

Readers get an open file, never a path: a shard evicted by another process after it was
opened stays readable through that handle (its blocks are freed when the handle closes).
Downloads are hashed while they are written; one whose sha256 or size differs from
index.json is never cached (the caller reads that shard by range, where every sample is
still checked on its own). A complete copy can still change later (a disk error, a person,
another tool): one whose size differs is dropped when opened, and after a sample read from
a copy fails its checks, the reader has the copy hashed (`check_copy`): a damaged copy is
dropped and fetched again, never blamed on the shard at its source.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
from collections.abc import Callable, Iterator
from typing import BinaryIO

from .format import sha256_of

log = logging.getLogger("vidshard.cache")


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


def _identity(st: os.stat_result) -> tuple[int, int]:
    """Which file a name or a handle is: a copy replaced under the same name is another one."""
    return st.st_dev, st.st_ino


_NAME = re.compile(r"[0-9a-f]{64}\.(tar|reserve)")


def _ours(name: str, ext: str) -> bool:
    """A file the cache made: `<sha256>.<ext>`. Other files in the folder are neither counted
    nor evicted."""
    match = _NAME.fullmatch(name)
    return match is not None and match.group(1) == ext


class ShardCache:
    def __init__(self, directory: str, limit: int, verify: bool = True):
        self.dir, self.limit, self.verify = directory, limit, verify
        self._rejected: set[str] = set()  # shards whose download did not match index.json (this process)
        self._intact: dict[str, tuple[int, int]] = {}  # sha256 -> the copy this process hashed and found intact
        os.makedirs(directory, exist_ok=True)

    def _path(self, name: str, ext: str) -> str:
        # `name` is index.json's sha256, checked to be 64 hex digits when the manifest was loaded.
        return os.path.join(self.dir, f"{name}.{ext}")

    def usage(self) -> int:
        """Bytes counted against the limit: complete shards plus reservations."""
        total = 0
        for entry in os.scandir(self.dir):
            with contextlib.suppress(OSError, ValueError):
                if _ours(entry.name, "tar"):
                    total += entry.stat().st_size
                elif _ours(entry.name, "reserve"):
                    with open(entry.path) as f:
                        total += int(f.read() or 0)
        return total

    def open(self, sha256: str, size: int, download: Callable[[BinaryIO], str], stats) -> BinaryIO | None:
        """An open file of the complete shard, downloaded first with `download(file) -> sha256`
        when missing. None: the caller reads the shard by range instead (larger than the
        cache, no room beside other downloads now, or its download did not match)."""
        final = self._path(sha256, "tar")
        hit = self._open_complete(final, size, stats)
        if hit is not None:
            return hit
        if size > self.limit or sha256 in self._rejected:
            stats["cache_bypassed"] += 1
            return None
        with _flock(self._path(sha256, "lock")):  # one download of this shard at a time
            hit = self._open_complete(final, size, stats)  # another worker fetched it while we waited
            if hit is not None:
                return hit
            if not self._reserve(sha256, size):
                stats["cache_bypassed"] += 1
                return None
            partial = self._path(sha256, "partial")
            try:
                with open(partial, "wb") as dst:
                    digest = download(dst)
                got = os.path.getsize(partial)
                if got != size or (self.verify and digest != sha256):
                    self._rejected.add(sha256)
                    stats["cache_rejected"] += 1
                    log.warning("shard %s...: the download (%d bytes, sha256 %s...) does not match index.json (%d bytes); "
                                "not cached, read by range", sha256[:16], got, digest[:16], size)
                    return None
                f = open(partial, "rb")  # noqa: SIM115 (the caller's); opened before the rename, so never lost to eviction
                os.replace(partial, final)
            finally:
                for ext in ("partial", "reserve"):
                    with contextlib.suppress(FileNotFoundError):
                        os.remove(self._path(sha256, ext))
            stats["cache_downloads"] += 1
            return f

    @staticmethod
    def _open_complete(final: str, size: int, stats) -> BinaryIO | None:
        try:
            f = open(final, "rb")  # noqa: SIM115 (the caller's)
        except FileNotFoundError:
            return None
        held = os.fstat(f.fileno()).st_size
        if held != size:  # cut short or grown since it was downloaded whole
            f.close()
            with contextlib.suppress(FileNotFoundError):
                os.remove(final)
            stats["cache_damaged"] += 1
            log.warning("cache copy %s holds %d bytes, index.json says %d: dropped, fetching the shard again", final, held, size)
            return None
        with contextlib.suppress(OSError):
            os.utime(f.fileno())  # LRU: most recently used
        stats["cache_hits"] += 1
        return f

    def check_copy(self, sha256: str, size: int) -> str | None:
        """Why the shard's complete copy is damaged (then it is removed: the next `open`
        downloads the shard again), or None. Each copy is hashed at most once per process
        (an intact copy of a shard that holds one bad sample is not hashed every epoch)."""
        final = self._path(sha256, "tar")
        with _flock(self._path(sha256, "lock")):  # not while a download replaces it
            try:
                f = open(final, "rb")
            except FileNotFoundError:
                return None
            with f:
                identity = _identity(os.fstat(f.fileno()))
                if self._intact.get(sha256) == identity:
                    return None
                held, digest = sha256_of(f)
            if (held, digest) == (size, sha256):
                self._intact[sha256] = identity
                return None
            with contextlib.suppress(FileNotFoundError):
                os.remove(final)
        return f"{final} holds {held} bytes of sha256 {digest[:16]}..., index.json says {size} bytes of {sha256[:16]}..."

    def identity(self, sha256: str) -> tuple[int, int] | None:
        """(device, inode) of the shard's complete copy now, None when there is none."""
        try:
            return _identity(os.stat(self._path(sha256, "tar")))
        except FileNotFoundError:
            return None

    def _reserve(self, name: str, size: int) -> bool:
        """Reserve `size` bytes, evicting least recently used shards; False if they do not fit
        beside the other downloads in progress."""
        with _flock(os.path.join(self.dir, ".cache.lock")):
            self._reclaim_stale()
            used = self.usage()
            if used + size > self.limit:
                complete = []
                for e in os.scandir(self.dir):
                    if _ours(e.name, "tar"):  # never a file the cache did not make (cache_dir= a dataset's own folder)
                        with contextlib.suppress(FileNotFoundError):
                            complete.append((e.stat().st_mtime, e.stat().st_size, e.path))
                for _, victim_size, victim in sorted(complete):
                    if used + size <= self.limit:
                        break
                    with contextlib.suppress(FileNotFoundError):
                        os.remove(victim)  # an open reader keeps its file; the name is gone
                        used -= victim_size
            if used + size > self.limit:
                return False
            with open(self._path(name, "reserve"), "w") as f:
                f.write(str(size))
            return True

    def _reclaim_stale(self) -> None:
        for entry in os.scandir(self.dir):
            if _ours(entry.name, "reserve"):
                name = entry.name[: -len(".reserve")]
                with _flock(self._path(name, "lock"), blocking=False) as free:
                    if free:  # nobody is downloading it: its owner died
                        for ext in ("partial", "reserve"):
                            with contextlib.suppress(FileNotFoundError):
                                os.remove(self._path(name, ext))
