"""Reading shard bytes from anywhere fsspec reaches (local, s3://, gs://, http(s)://), with
timeouts, retries and redacted messages.

A byte range is fetched as a sequence of ranged requests of `block_bytes` each; the tar
parser consumes each block as it arrives, so the first sample is delivered before the shard
has finished downloading. A transient failure (connection reset, timeout, 5xx, a body cut
short) retries the current block with exponential backoff, from the first byte not yet
delivered: delivered bytes are never fetched twice. A range that keeps failing raises
ShardReadError, which goes to the dataset's on_error policy. Retries and failures are
counted in the caller's stats.
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
import logging
import re
import time
from collections import Counter
from typing import Any

import fsspec

from .errors import SampleError

log = logging.getLogger("vidshard.remote")


class ShardReadError(SampleError):
    """A shard's bytes could not be read (after retries, or a permanent error)."""

    reason = "read"


@dataclasses.dataclass(frozen=True, kw_only=True)
class StorageOptions:
    retries: int = 5  # attempts after the first, per block
    backoff_s: float = 0.2  # first wait; doubles per retry, at most max_backoff_s
    max_backoff_s: float = 5.0
    timeout_s: float = 30.0  # connect and read timeout of every request: no read hangs past it
    block_bytes: int = 4 * 2**20  # bytes per ranged request
    fs_options: dict[str, Any] = dataclasses.field(default_factory=dict)  # extra fsspec options per protocol


_SECRETS = re.compile(r"((?:X-Amz-[A-Za-z-]+|Signature|AWSAccessKeyId|Credential|Expires|sig|token|key)=)[^&\s'\"]+", re.I)
_USERINFO = re.compile(r"(//)[^/@\s]+@")


def redact(text: str) -> str:
    """Strip credentials from URLs and messages: user:password@ and signed-URL parameters."""
    return _SECRETS.sub(r"\1***", _USERINFO.sub(r"\1***@", text))


def filesystem(url: str, options: StorageOptions) -> tuple[fsspec.AbstractFileSystem, str]:
    """(filesystem, path) for a URL, with our timeouts; we retry ourselves, so clients don't."""
    protocol = url.split("://", 1)[0] if "://" in url else "file"
    kwargs: dict[str, Any] = {}
    if protocol == "s3":
        # Endpoint and credentials: the standard AWS settings (AWS_ENDPOINT_URL, env, profile).
        kwargs = {"config_kwargs": {"connect_timeout": options.timeout_s, "read_timeout": options.timeout_s,
                                    "retries": {"max_attempts": 1}}}
    elif protocol in ("http", "https"):
        import aiohttp

        kwargs = {"client_kwargs": {"timeout": aiohttp.ClientTimeout(total=None, sock_connect=options.timeout_s,
                                                                      sock_read=options.timeout_s)}}
    kwargs.update(options.fs_options.get(protocol, {}))
    fs, path = fsspec.core.url_to_fs(url, **kwargs)
    if protocol == "s3":
        fs.retries = 1  # s3fs's own count of attempts: one, so faults reach our loop and counters
    return fs, path


def _http_status(exc: BaseException) -> int | None:
    status = getattr(exc, "status", None)  # aiohttp.ClientResponseError
    if isinstance(status, int):
        return status
    response = getattr(exc, "response", None)  # botocore ClientError
    if isinstance(response, dict):
        return response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return None


def is_transient(exc: BaseException) -> bool:
    """Worth retrying: resets, timeouts, 5xx/408/429, cut bodies. Not: missing, forbidden."""
    if isinstance(exc, (FileNotFoundError, PermissionError, IsADirectoryError)):
        return False
    status = _http_status(exc)
    if status is not None:
        return status >= 500 or status in (408, 429)
    if isinstance(exc, (OSError, asyncio.TimeoutError, TimeoutError, EOFError)):
        return True
    name = type(exc).__name__
    return any(word in name for word in ("Timeout", "Connection", "Payload", "IncompleteRead", "ResponseStreaming", "ClientError"))


class RangeReader(io.RawIOBase):
    """[offset, offset + length) of a file, fetched block by block with retries."""

    def __init__(self, url: str, offset: int, length: int, options: StorageOptions, stats: Counter):
        self.url, self.pos, self.end = url, offset, offset + length
        self.options, self.stats = options, stats
        self.fs, self.path = filesystem(url, options)
        self.buffer = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:
        if not self.buffer:
            if self.pos >= self.end:
                return 0
            self.buffer = self._fetch(self.pos, min(self.pos + self.options.block_bytes, self.end))
            self.pos += len(self.buffer)
        n = min(len(buf), len(self.buffer))
        buf[:n] = self.buffer[:n]
        self.buffer = self.buffer[n:]
        return n

    def _fetch(self, start: int, end: int | None) -> bytes:
        """Bytes [start, end) (end None: to the end of the file), retrying transient faults."""
        got = b""
        wait = self.options.backoff_s
        for attempt in range(self.options.retries + 1):
            try:
                got += self.fs.cat_file(self.path, start=start + len(got), end=end)
                if end is None or len(got) >= end - start:
                    return got if end is None else got[: end - start]
                raise EOFError(f"body cut short at byte {start + len(got)} of [{start}, {end})")
            except Exception as exc:  # classified below: permanent errors are raised at once
                if isinstance(exc, FileNotFoundError):
                    raise FileNotFoundError(f"{redact(self.url)}: not found") from None
                if not is_transient(exc) or attempt == self.options.retries:
                    self.stats["failed_reads"] += 1
                    raise ShardReadError(
                        f"reading bytes [{start}, {end}) failed after {attempt + 1} attempt(s): "
                        f"{type(exc).__name__}: {redact(str(exc))[:300]}", shard=redact(self.url)) from None
                self.stats["retries"] += 1
                log.info("retrying %s [%d, %s) after %s", redact(self.url), start + len(got), end, type(exc).__name__)
                time.sleep(wait)
                wait = min(wait * 2, self.options.max_backoff_s)
        raise AssertionError("unreachable")


def read_bytes(url: str, options: StorageOptions, stats: Counter | None = None) -> bytes:
    """A whole (small) file, e.g. index.json, with the same retries."""
    if "://" not in url or url.startswith("file://"):
        with open(url.removeprefix("file://"), "rb") as f:
            return f.read()
    reader = RangeReader(url, 0, 0, options, stats if stats is not None else Counter())
    return reader._fetch(0, None)


def download(url: str, size: int, path: str, options: StorageOptions, stats: Counter) -> None:
    """A whole shard into a local file, block by block with retries."""
    with open_range(url, 0, size, options, stats) as src, open(path, "wb") as dst:
        for block in iter(lambda: src.read(1 << 20), b""):
            dst.write(block)


def open_range(url: str, offset: int, length: int, options: StorageOptions, stats: Counter) -> io.BufferedReader:
    """A buffered stream over [offset, offset + length) of a shard, wherever it is."""
    if "://" not in url or url.startswith("file://"):
        f = open(url.removeprefix("file://"), "rb")  # noqa: SIM115 (closed by the caller)
        f.seek(offset)
        return io.BufferedReader(_Bounded(f, length), buffer_size=1 << 20)
    return io.BufferedReader(RangeReader(url, offset, length, options, stats), buffer_size=options.block_bytes)


class _Bounded(io.RawIOBase):
    """Reads at most `length` bytes of an open file: the tar parser sees the range's end as EOF."""

    def __init__(self, f, length: int):
        self.f, self.left = f, length

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:
        n = min(len(buf), self.left)
        if n <= 0:
            return 0
        data = self.f.read(n)
        buf[: len(data)] = data
        self.left -= len(data)
        return len(data)

    def close(self) -> None:
        self.f.close()
        super().close()
