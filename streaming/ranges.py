"""One way to open a byte range of a shard, wherever it is: `open_range` gives a buffered
stream over [offset, offset + length) of a local path, an open local file (a cache copy), or
a URL. `download` copies a whole shard into the cache. Retries, timeouts and redaction are
remote.py's.

A URL's range is fetched as ranged requests of `block_bytes` each (`RangeReader`); the tar
parser consumes each block as it arrives, so the first sample is delivered before the shard
has finished downloading. A transient fault retries the current block from the first byte
not yet delivered: delivered bytes are never fetched twice.

HTTP ranged requests are made here rather than through fsspec's `cat_file`, which reads
whatever body comes back: a server that ignores `Range` (python -m http.server) answers 200
with the whole file, which would be read into memory and taken for the range. A 200 to a
ranged request raises RangeNotSupportedError instead; so does an answer longer than the
range from any other store (an S3-compatible server that ignores Range). Where the user
opted into whole-shard transfers (`cache_dir=`), an HTTP server that ignores Range is read
from plain GETs instead (`WholeGetReader`): whole shards into the cache, and the ranges of
shards the cache could not take (each GET from the file's first byte: late ranges of large
shards cost their offset in transfer, memory stays one block). Without a cache such a server
stops the job at once: reading every run that way would transfer each shard many times over.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import logging
import os
import re
from collections import Counter
from typing import BinaryIO

import fsspec

from .errors import RangeNotSupportedError, ReaderError, ShardReadError
from .remote import StorageOptions, filesystem, http_get, protocol_of, redact, retry

log = logging.getLogger("vidshard.remote")
# Buffer of every shard stream: small, since members are read with one call each (which
# bypasses the buffer); it only serves the 512-byte tar headers. Part of the memory bound.
READ_BUFFER = 64 * 1024
_warned: set[str] = set()  # dataset folders already warned about ignoring Range (once per process)


def open_range(src: str | BinaryIO, offset: int, length: int, options: StorageOptions, stats: Counter,
               whole_get: bool = False) -> io.BufferedReader:
    """A buffered stream over [offset, offset + length) of a shard: a URL or local path, or an
    open local file (which the stream takes over and closes). `whole_get`: read an HTTP
    server that ignores Range from plain GETs instead of raising RangeNotSupportedError."""
    if isinstance(src, str) and protocol_of(src) != "file":
        return io.BufferedReader(RangeReader(src, offset, length, options, stats, whole_get), buffer_size=READ_BUFFER)
    return file_range(open_local(src) if isinstance(src, str) else src, offset, length, owned=True)


def file_range(f: BinaryIO, offset: int, length: int, owned: bool = False) -> io.BufferedReader:
    """A buffered stream over [offset, offset + length) of an open local file (`FileRange`)."""
    return io.BufferedReader(FileRange(f, offset, length, owned), buffer_size=READ_BUFFER)


def open_local(url: str) -> BinaryIO:
    """A local shard (a path or file:// URL), open for reading; ShardReadError if it cannot be."""
    try:
        return open(url.removeprefix("file://"), "rb")  # noqa: SIM115 (the caller's)
    except (FileNotFoundError, PermissionError, IsADirectoryError) as exc:
        raise ShardReadError(f"cannot open the shard ({type(exc).__name__})", shard=redact(url)) from None


class FileRange(io.RawIOBase):
    """[offset, offset + length) of an open local file, read at explicit offsets (`pread`,
    never the file's shared position): the tar parser sees the range's end as EOF. Seeks
    forward only, relative (tarfile passes over unread members; `tario.Span` skips). Closes
    the file with the range only when `owned` (the map dataset's held files stay open)."""

    def __init__(self, f: BinaryIO, offset: int, length: int, owned: bool = False):
        self.f, self.fd, self.pos, self.end, self.owned = f, f.fileno(), offset, offset + length, owned

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buf) -> int:
        n = min(len(buf), self.end - self.pos)
        if n <= 0:
            return 0
        got = os.preadv(self.fd, [memoryview(buf)[:n]], self.pos)
        self.pos += got
        return got

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence != io.SEEK_CUR or offset < 0:
            raise io.UnsupportedOperation("only forward relative seeks")
        self.pos = min(self.pos + offset, self.end)
        return self.pos

    def tell(self) -> int:
        return self.pos

    def close(self) -> None:
        if self.owned:
            self.f.close()
        super().close()


class RangeReader(io.RawIOBase):
    """[offset, offset + length) of a URL, fetched block by block with retries."""

    def __init__(self, url: str, offset: int, length: int, options: StorageOptions, stats: Counter, whole_get: bool = False):
        self.url, self.pos, self.end = url, offset, offset + length
        self.options, self.stats = options, stats
        self.fs, self.path = filesystem(url, options)
        self.http = protocol_of(url) in ("http", "https")
        self.block = memoryview(b"")
        self.whole_get, self.whole = whole_get and self.http, None  # the WholeGetReader once Range proved ignored

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:
        if self.whole is not None:
            return self.whole.readinto(buf)
        if not self.block:
            if self.pos >= self.end:
                return 0
            self.block = memoryview(b"")  # let the spent block go before the next one arrives
            try:
                self.block = memoryview(self.fetch(self.pos, min(self.pos + self.options.block_bytes, self.end)))
            except RangeNotSupportedError:
                if not self.whole_get:
                    raise
                self.stats["whole_get_reads"] += 1
                self.whole = WholeGetReader(self.fs, self.path, self.url, self.pos, self.end - self.pos, self.options, self.stats)
                return self.whole.readinto(buf)
            self.pos += len(self.block)
        n = min(len(buf), len(self.block))
        buf[:n] = self.block[:n]
        self.block = self.block[n:]  # a view: no copy of the rest of the block
        return n

    def close(self) -> None:
        if self.whole is not None:
            self.whole.close()
        super().close()

    def size(self) -> int | None:
        """The file's size where the storage tells it (an HTTP server may not)."""
        try:
            size = self.fs.size(self.path)
        except Exception:  # noqa: BLE001 (the read that follows retries the same request and reports it)
            return None
        return size if isinstance(size, int) else None

    def fetch(self, start: int, end: int | None, cap: int | None = None) -> bytes:
        """Bytes [start, end) (end None: to the end of the file, or at most `cap` bytes),
        retrying transient faults from the first byte not yet received."""
        got = b""

        def attempt() -> bytes:
            nonlocal got
            part = self._get(start + len(got), end, cap)
            if end is not None and len(part) > end - start - len(got):
                # s3fs/gcsfs return whatever body comes back: a server that ignores Range
                # sends the object from its first byte, which must not pass for the range.
                raise RangeNotSupportedError(
                    f"{redact(self.url)}: the storage answered {len(part)} bytes to a request for the "
                    f"{end - start - len(got)} bytes [{start + len(got)}, {end}): it ignores byte-range requests, "
                    "so samples cannot be read by range")
            got = got + part if got else part  # joined only after a cut body (rare): no copy otherwise
            if end is None or len(got) >= end - start:
                return got if end is None or len(got) == end - start else got[: end - start]
            raise EOFError(f"body cut short at byte {start + len(got)} of [{start}, {end})")

        return retry(attempt, f"reading bytes [{start}, {end})", self.url, self.options, self.stats)

    def _get(self, start: int, end: int | None, cap: int | None = None) -> bytes:
        """One request: bytes [start, end), or from start to the end of the file (at most `cap`)."""
        if self.http:
            return fsspec.asyn.sync(self.fs.loop, _http_range, self.fs, self.path, start, end, redact(self.url), cap)
        if end is None and cap is not None:  # object stores know each object's size: ask for no more than cap
            size = self.fs.size(self.path)
            end = cap if size is None else min(size, cap)
            if end == 0:
                return b""  # no byte range to ask for
        return self.fs.cat_file(self.path, start=start, end=end)


async def _http_range(fs, path: str, start: int, end: int | None, shown: str, cap: int | None = None) -> bytes:
    """GET bytes [start, end) (end None: the whole file, or its first `cap` bytes), refusing
    a server that ignores Range."""
    headers = {} if end is None else {"Range": f"bytes={start}-{end - 1}"}
    async with await http_get(fs, path, shown, headers) as r:
        if r.status == 416:
            return b""  # the range starts past the end: a short body, reported by the caller
        if end is None:
            return await r.read() if cap is None else await _read_at_most(r, cap)
        if r.status == 200 and start == 0 and r.content_length == end:
            return await r.content.readexactly(end)  # the whole file was asked for: a 200 is the right answer
        if r.status != 206:
            raise RangeNotSupportedError(
                f"{shown}: the server ignores HTTP Range requests (it answered {r.status} with the whole file to a "
                f"request for bytes [{start}, {end})), so samples cannot be read by byte range. Serve the folder with a "
                "server that honours Range (nginx, caddy, any object store), or pass cache_dir= to download whole shards")
        served = re.match(r"bytes (\d+)-", r.headers.get("Content-Range", ""))
        if served is None or int(served.group(1)) != start:
            raise RangeNotSupportedError(f"{shown}: the server answered bytes {r.headers.get('Content-Range')!r} "
                                         f"to a request for [{start}, {end})")
        try:
            return await r.content.readexactly(end - start)  # never more than asked for
        except asyncio.IncompleteReadError as exc:
            return exc.partial  # cut short: the caller retries from the first missing byte


async def _read_at_most(r, cap: int) -> bytearray:
    """At most `cap` bytes of a body: a longer one is not read further."""
    body = bytearray()  # returned as it is: bytes(body) would hold the body twice
    while len(body) < cap:
        block = await r.content.read(min(1 << 20, cap - len(body)))
        if not block:
            break
        body += block
    return body


class WholeGetReader(io.RawIOBase):
    """[offset, offset + length) of a file out of plain GETs, for an HTTP server that ignores
    Range: the bytes before the range are read and dropped. After a transient fault it
    reconnects (from byte 0) with the same retries as a ranged read."""

    def __init__(self, fs, path: str, url: str, offset: int, length: int, options: StorageOptions, stats: Counter):
        self.fs, self.path, self.url = fs, path, url
        self.next, self.end = offset, offset + length  # the next byte to deliver, the range's end
        self.options, self.stats = options, stats
        self.response = None
        self.at = 0  # the response's position in the file

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:
        if self.next >= self.end:
            return 0
        n = min(len(buf), self.end - self.next, self.options.block_bytes)
        data = retry(lambda: self._read(n), f"reading bytes [{self.next}, {self.end}) from a plain GET", self.url,
                     self.options, self.stats)
        buf[: len(data)] = data
        self.next += len(data)
        return len(data)

    def _read(self, n: int) -> bytes:
        try:
            if self.response is None:
                self.response = fsspec.asyn.sync(self.fs.loop, http_get, self.fs, self.path, redact(self.url))
                self.at = 0
            while self.at < self.next:  # pass over the bytes before the range (again, after a reconnect)
                self.at += len(self._chunk(min(self.options.block_bytes, self.next - self.at)))
            data = self._chunk(n)
            self.at += len(data)
            return data
        except Exception:
            self._release()  # the next attempt reconnects
            raise

    def _chunk(self, n: int) -> bytes:
        data = fsspec.asyn.sync(self.fs.loop, self.response.content.read, n)
        if not data:
            raise EOFError(f"the body ended at byte {self.at}, before byte {self.end}")
        return data

    def _release(self) -> None:
        if self.response is not None:
            response, self.response = self.response, None
            fsspec.asyn.sync(self.fs.loop, _close, response)

    def close(self) -> None:
        self._release()
        super().close()


async def _close(response) -> None:
    response.close()  # drops the connection (in its loop's thread): the unread rest of the body is not wanted


def download(url: str, size: int, dst: io.BufferedWriter, options: StorageOptions, stats: Counter) -> str:
    """A whole shard of `size` bytes into `dst` (the cache's partial file), by range with
    retries; its sha256, computed while writing. From an HTTP server that ignores Range, one
    plain GET instead, never writing more than `size` (the cache's reservation)."""
    try:
        with open_range(url, 0, size, options, stats) as src:
            return _copy(src, dst)
    except RangeNotSupportedError:
        if protocol_of(url) not in ("http", "https"):
            raise
    stats["whole_downloads"] += 1
    where = redact(url.rsplit("/", 1)[0])
    if where not in _warned:  # once per dataset and process, not once per shard
        _warned.add(where)
        log.warning("%s: the server ignores Range requests; downloading whole shards into the cache", where)
    fs, path = filesystem(url, options)

    def attempt() -> str:
        _to_disk(dst.seek, 0)
        _to_disk(dst.truncate)
        return fsspec.asyn.sync(fs.loop, _http_copy, fs, path, redact(url), size, dst)

    try:
        return retry(attempt, "downloading the whole shard", url, options, stats)
    except _CacheDiskError as exc:
        raise exc.error from None  # the cache's disk, not the network: its caller counts it and reads past the cache


class _CacheDiskError(ReaderError):
    """An OSError of the cache's own disk (ENOSPC, EIO) inside a download attempt: a
    ReaderError, so `retry` passes it through untried instead of taking it for a network
    fault; `download` raises the OSError itself."""

    def __init__(self, error: OSError):
        super().__init__(str(error))
        self.error = error


def _to_disk(op, *args):
    """`op(*args)` on the cache's partial file, its OSError a _CacheDiskError."""
    try:
        return op(*args)
    except OSError as exc:
        raise _CacheDiskError(exc) from exc


def _copy(src: BinaryIO, dst: io.BufferedWriter) -> str:
    digest = hashlib.sha256()
    for block in iter(lambda: src.read(1 << 20), b""):
        digest.update(block)
        dst.write(block)
    return digest.hexdigest()


async def _http_copy(fs, path: str, shown: str, size: int, dst) -> str:
    """One plain GET of a file into dst; its sha256. A body of other than `size` bytes is an
    EOFError (retried); at most size + 1 bytes are read, and never more than size written."""
    digest, written = hashlib.sha256(), 0
    async with await http_get(fs, path, shown) as r:
        while block := await r.content.read(min(1 << 20, size + 1 - written)):
            if written + len(block) > size:
                written += len(block)
                break
            digest.update(block)
            _to_disk(dst.write, block)
            written += len(block)
    if written != size:
        raise EOFError(f"{written} bytes received, index.json says {size}")
    return digest.hexdigest()
