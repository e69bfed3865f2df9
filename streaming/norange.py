"""A byte range from an HTTP server that ignores `Range` (`python -m http.server`): one plain
GET of the whole file, the bytes before the range read and dropped.

Used only where the user opted into whole-shard transfers (`cache_dir=`) and the cache could
not take the shard (larger than the limit, no room beside other downloads in progress, a
download that did not match index.json): its samples are still read, uncached. Each
connection reads the file from its first byte, so late ranges of large shards cost their
offset in transfer; memory stays one block. Without a cache a server that ignores Range
stops the job at once instead (remote.RangeNotSupportedError): reading every run this way
would transfer each shard many times over.
"""

from __future__ import annotations

import io
import time
from collections import Counter

import fsspec

from .errors import ShardReadError
from .remote import StorageOptions, _jitter, is_transient, redact


class WholeGetReader(io.RawIOBase):
    """[offset, offset + length) of a file out of plain GETs, reconnecting (from byte 0) after
    a transient fault with the same retries and backoff as a ranged read."""

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
        data = self._read(min(len(buf), self.end - self.next, self.options.block_bytes))
        buf[: len(data)] = data
        self.next += len(data)
        return len(data)

    def _read(self, n: int) -> bytes:
        wait = self.options.backoff_s
        for attempt in range(self.options.retries + 1):
            try:
                if self.response is None:
                    self.response, self.at = fsspec.asyn.sync(self.fs.loop, _get, self.fs, self.path, redact(self.url)), 0
                while self.at < self.next:  # pass over the bytes before the range (again, after a reconnect)
                    self.at += len(self._chunk(min(self.options.block_bytes, self.next - self.at)))
                data = self._chunk(n)
                self.at += len(data)
                return data
            except Exception as exc:  # classified as a ranged read's errors are
                self._release()
                if not is_transient(exc) or attempt == self.options.retries:
                    self.stats["failed_reads"] += 1
                    raise ShardReadError(f"reading bytes [{self.next}, {self.end}) from a plain GET failed after {attempt + 1} "
                                         f"attempt(s): {type(exc).__name__}: {redact(str(exc))[:300]}",
                                         shard=redact(self.url)) from None
                self.stats["retries"] += 1
                time.sleep(wait * _jitter.uniform(0.5, 1.0))
                wait = min(wait * 2, self.options.max_backoff_s)
        raise AssertionError("unreachable")

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


async def _get(fs, path: str, shown: str):
    session = await fs.set_session()
    response = await session.get(fs.encode_url(path), **fs.kwargs)
    if response.status == 404:
        response.close()
        raise FileNotFoundError(shown)
    try:
        response.raise_for_status()
    except Exception:
        response.close()
        raise
    return response


async def _close(response) -> None:
    response.close()  # drops the connection (in its loop's thread): the unread rest of the body is not wanted
