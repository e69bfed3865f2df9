"""Reading shard bytes from anywhere fsspec reaches (local, s3://, gs://, http(s)://), with
timeouts, retries and redacted messages.

A byte range is fetched as a sequence of ranged requests of `block_bytes` each; the tar
parser consumes each block as it arrives, so the first sample is delivered before the shard
has finished downloading. A transient failure (connection reset, timeout, 5xx, a body cut
short) retries the current block with exponential backoff and jitter, from the first byte
not yet delivered: delivered bytes are never fetched twice. A range that keeps failing
raises ShardReadError, which goes to the dataset's on_error policy. Retries and failures
are counted in the caller's stats.

HTTP ranged requests are made here rather than through fsspec's `cat_file`, which reads
whatever body comes back: a server that ignores `Range` (python -m http.server) answers
200 with the whole file, which would be read into memory and taken for the range. A 200
to a ranged request raises RangeNotSupportedError instead; whole-shard downloads (the
cache) then fall back to one plain GET, bounded by the shard's size. Other stores go
through fsspec's `cat_file`: an answer longer than the range asked for (an S3-compatible
server that ignores Range) raises RangeNotSupportedError too.
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
import logging
import random
import re
import sys
import time
from collections import Counter
from typing import Any

import fsspec

from .errors import RangeNotSupportedError, ShardReadError, StorageError

__all__ = ["ShardReadError", "StorageOptions", "RangeReader", "open_range", "redact"]

log = logging.getLogger("vidshard.remote")
_jitter = random.SystemRandom()  # not seeded: workers that failed together must not retry together
# Buffer of every shard stream: small, since members are read with one call each (which
# bypasses the buffer); it only serves the 512-byte tar headers. Part of the memory bound.
READ_BUFFER = 64 * 1024


@dataclasses.dataclass(frozen=True, kw_only=True)
class StorageOptions:
    retries: int = 5  # attempts after the first, per block
    backoff_s: float = 0.2  # first wait; doubles per retry, at most max_backoff_s; each wait drawn from [w/2, w]
    max_backoff_s: float = 5.0
    timeout_s: float = 30.0  # connect and read timeout of every request: no read hangs past it
    block_bytes: int = 4 * 2**20  # bytes per ranged request
    fs_options: dict[str, Any] = dataclasses.field(default_factory=dict)  # extra fsspec options per protocol


# sig/token/key only as URL parameters: a SampleError's "[shard=..., key=<sample key>]" is no secret.
# A bare `key=` is a sample key in our typed errors (kept); as a URL parameter, or with a
# prefix (secret_key=, access_key=, api-key=), it is a secret, as are tokens and passwords.
_SECRETS = re.compile(r"((?:X-Amz-[A-Za-z-]+|Signature|AWSAccessKeyId|Credential|Expires|sig|(?<=[?&;])key|"
                      r"[A-Za-z]+[_-]?key|[A-Za-z_-]*(?:token|password|passwd|secret))=)[^&;\s'\"]+", re.I)
_USERINFO = re.compile(r"(//)[^/@\s]+@")


def redact(text: str) -> str:
    """Strip credentials from URLs and messages: user:password@ and signed-URL parameters."""
    return _SECRETS.sub(r"\1***", _USERINFO.sub(r"\1***@", text))


def protocol_of(url: str) -> str:
    return url.split("://", 1)[0] if "://" in url else "file"


def fs_kwargs(protocol: str, options: StorageOptions) -> dict[str, Any]:
    """fsspec options giving every request our timeouts; we retry ourselves, so clients don't."""
    t = options.timeout_s
    if protocol == "s3":
        # Endpoint and credentials: the standard AWS settings (AWS_ENDPOINT_URL, env, profile).
        kwargs: dict[str, Any] = {"config_kwargs": {"connect_timeout": t, "read_timeout": t, "retries": {"max_attempts": 1}}}
    elif protocol in ("http", "https", "gs", "gcs"):
        import aiohttp

        timeout = aiohttp.ClientTimeout(total=None, sock_connect=t, sock_read=t)
        if protocol in ("http", "https"):
            kwargs = {"client_kwargs": {"timeout": timeout}}
        else:
            # gcsfs passes requests_timeout to every request (None there would mean no
            # timeout, overriding the session's); the session gets it too for good measure.
            kwargs = {"requests_timeout": timeout, "session_kwargs": {"timeout": timeout}}
    else:
        kwargs = {}
    kwargs.update(options.fs_options.get(protocol, {}))
    return kwargs


def filesystem(url: str, options: StorageOptions) -> tuple[fsspec.AbstractFileSystem, str]:
    """(filesystem, path) for a URL, with our timeouts."""
    protocol = protocol_of(url)
    fs, path = fsspec.core.url_to_fs(url, **fs_kwargs(protocol, options))
    if protocol == "s3":
        fs.retries = 1  # s3fs's own count of attempts: one, so faults reach our loop and counters
    return fs, path


def _http_status(exc: BaseException) -> int | None:
    """The HTTP status of a client library's error, by the library's own exception types."""
    aiohttp = sys.modules.get("aiohttp")
    if aiohttp is not None and isinstance(exc, aiohttp.ClientResponseError):
        return exc.status
    botocore = sys.modules.get("botocore.exceptions")
    if botocore is not None and isinstance(exc, botocore.ClientError):
        return exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    gcsfs = sys.modules.get("gcsfs.retry")
    if gcsfs is not None and isinstance(exc, gcsfs.HttpError) and isinstance(exc.code, int):
        return exc.code
    return None


def _transient_types() -> tuple[type[BaseException], ...]:
    """Connection, timeout and cut-body errors of the client libraries that are loaded
    (an error from a library means the library is imported)."""
    types: list[type[BaseException]] = [OSError, EOFError, asyncio.TimeoutError, TimeoutError]
    aiohttp = sys.modules.get("aiohttp")
    if aiohttp is not None:
        types += [aiohttp.ClientConnectionError, aiohttp.ClientPayloadError]
    botocore = sys.modules.get("botocore.exceptions")
    if botocore is not None:
        types += [botocore.HTTPClientError, botocore.ConnectionError, botocore.IncompleteReadError]
    return tuple(types)


def is_transient(exc: BaseException) -> bool:
    """Worth retrying: resets, timeouts, 5xx/408/429, cut bodies. Not: missing, forbidden."""
    if isinstance(exc, (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError, StorageError)):
        return False
    status = _http_status(exc)
    if status is not None:
        return status >= 500 or status in (408, 429)
    return isinstance(exc, _transient_types())


class RangeReader(io.RawIOBase):
    """[offset, offset + length) of a file, fetched block by block with retries."""

    def __init__(self, url: str, offset: int, length: int, options: StorageOptions, stats: Counter, whole_get=None):
        self.url, self.pos, self.end = url, offset, offset + length
        self.options, self.stats = options, stats
        self.fs, self.path = filesystem(url, options)
        self.http = protocol_of(url) in ("http", "https")
        self.block = memoryview(b"")
        # An HTTP server that ignores Range: go on from plain GETs (streaming/norange.py's
        # reader, passed in) instead of stopping, where the user opted into whole-shard
        # transfers (cache_dir=).
        self.whole_get, self.whole = whole_get if self.http else None, None

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
                self.block = memoryview(self._fetch(self.pos, min(self.pos + self.options.block_bytes, self.end)))
            except RangeNotSupportedError:
                if self.whole_get is None:
                    raise
                self.stats["whole_get_reads"] += 1
                self.whole = self.whole_get(self.fs, self.path, self.url, self.pos, self.end - self.pos, self.options, self.stats)
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

    def _get(self, start: int, end: int | None, cap: int | None = None) -> bytes:
        if self.http:
            return fsspec.asyn.sync(self.fs.loop, _http_get, self.fs, self.path, start, end, redact(self.url), cap)
        if end is None and cap is not None:  # object stores know each object's size: ask for no more than cap
            size = self.fs.size(self.path)
            end = cap if size is None else min(size, cap)
            if end == 0:
                return b""  # no byte range to ask for
        return self.fs.cat_file(self.path, start=start, end=end)

    def _fetch(self, start: int, end: int | None, cap: int | None = None) -> bytes:
        """Bytes [start, end) (end None: to the end of the file, or at most `cap` bytes),
        retrying transient faults."""
        got = b""
        wait = self.options.backoff_s
        for attempt in range(self.options.retries + 1):
            try:
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
            except StorageError:
                raise  # the storage itself cannot serve ranges: no retry, no skip
            except Exception as exc:  # classified below: permanent errors are raised at once
                if not is_transient(exc) or attempt == self.options.retries:
                    self.stats["failed_reads"] += 1
                    what = "not found" if isinstance(exc, FileNotFoundError) else \
                        f"failed after {attempt + 1} attempt(s): {type(exc).__name__}: {redact(str(exc))[:300]}"
                    raise ShardReadError(f"reading bytes [{start}, {end}) {what}", shard=redact(self.url)) from None
                self.stats["retries"] += 1
                log.info("retrying %s [%d, %s) after %s", redact(self.url), start + len(got), end, type(exc).__name__)
                time.sleep(wait * _jitter.uniform(0.5, 1.0))
                wait = min(wait * 2, self.options.max_backoff_s)
        raise AssertionError("unreachable")


async def _http_get(fs, path: str, start: int, end: int | None, shown: str, cap: int | None = None) -> bytes:
    """GET bytes [start, end) (end None: the whole file, or its first `cap` bytes), refusing
    a server that ignores Range."""
    session = await fs.set_session()
    kwargs = dict(fs.kwargs)
    headers = dict(kwargs.pop("headers", None) or {})
    if end is not None:
        headers["Range"] = f"bytes={start}-{end - 1}"
    async with session.get(fs.encode_url(path), headers=headers, **kwargs) as r:
        if r.status == 404:
            raise FileNotFoundError(shown)
        if r.status == 416:
            return b""  # the range starts past the end: a short body, reported by the caller
        r.raise_for_status()
        if end is None and cap is None:
            return await r.read()
        if end is None:
            body = bytearray()  # returned as it is: bytes(body) would hold the body twice
            while len(body) < cap:  # a body longer than cap is not read further
                block = await r.content.read(min(1 << 20, cap - len(body)))
                if not block:
                    break
                body += block
            return body
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


def open_range(src: str | io.BufferedReader, offset: int, length: int, options: StorageOptions,
               stats: Counter, whole_get=None) -> io.BufferedReader:
    """A buffered stream over [offset, offset + length) of a shard: a URL or local path, or
    an open local file (which the stream takes over and closes). `whole_get`: a reader
    class (norange.WholeGetReader) for an HTTP server that ignores Range, instead of raising."""
    if not isinstance(src, str):
        src.seek(offset)
        return io.BufferedReader(_Bounded(src, length), buffer_size=READ_BUFFER)
    if "://" not in src or src.startswith("file://"):
        try:
            f = open(src.removeprefix("file://"), "rb")  # noqa: SIM115 (closed by the caller)
        except (FileNotFoundError, PermissionError, IsADirectoryError) as exc:
            raise ShardReadError(f"cannot open the shard ({type(exc).__name__})", shard=src) from None
        f.seek(offset)
        return io.BufferedReader(_Bounded(f, length), buffer_size=READ_BUFFER)
    return io.BufferedReader(RangeReader(src, offset, length, options, stats, whole_get), buffer_size=READ_BUFFER)


class _Bounded(io.RawIOBase):
    """Reads at most `length` bytes of an open file: the tar parser sees the range's end as EOF.
    Seeks forward within the range (tarfile passes over unread members without reading them)."""

    def __init__(self, f, length: int):
        self.f, self.left = f, length

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buf) -> int:
        n = min(len(buf), self.left)
        if n <= 0:
            return 0
        got = self.f.readinto(memoryview(buf)[:n])
        self.left -= got
        return got

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence != io.SEEK_CUR or offset < 0:
            raise io.UnsupportedOperation("only forward relative seeks")
        step = min(offset, self.left)
        self.f.seek(step, io.SEEK_CUR)
        self.left -= step
        return self.tell()

    def tell(self) -> int:
        return self.f.tell()

    def close(self) -> None:
        self.f.close()
        super().close()
