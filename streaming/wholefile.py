"""Whole files: index.json (bounded: `read_bytes(..., max_bytes=)`) and whole shards for the
cache (`download`, block by block through `remote.open_range`, or one plain GET bounded by the
shard's size from a server that ignores Range). Retries, timeouts and redaction as in remote.py.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import time
from collections import Counter

import fsspec

from .errors import RangeNotSupportedError, ShardReadError
from .remote import RangeReader, StorageOptions, _jitter, filesystem, is_transient, open_range, protocol_of, redact

log = logging.getLogger("vidshard.remote")
_warned: set[str] = set()  # dataset folders already warned about (once per process)


class TooLargeError(ValueError):
    """A file over the byte limit its reader was given (read_bytes' max_bytes)."""


def _read_at_most(f, n: int) -> bytearray:
    """Up to n bytes, in pieces into one growing buffer: f.read(n) reserves all n bytes first
    (1 GiB for a 2 KB index.json), and joining a list of pieces holds the bytes twice (2 GiB
    held for an endless file under a 1 GiB limit)."""
    data = bytearray()
    while len(data) < n and (piece := f.read(min(1 << 20, n - len(data)))):
        data += piece
    return data


def read_bytes(url: str, options: StorageOptions, stats: Counter | None = None, max_bytes: int | None = None) -> bytes | bytearray:
    """A whole (small) file, e.g. index.json, with the same retries. With `max_bytes`, a
    larger file is refused (ValueError naming it, its size and the limit) by its size where
    the storage tells it, before reading; in any case at most max_bytes + 1 bytes are read,
    and held once (a file without a size, an endless body: the bound is on what is held)."""
    if "://" not in url or url.startswith("file://"):
        with open(url.removeprefix("file://"), "rb") as f:
            if max_bytes is None:
                return f.read()
            size = os.fstat(f.fileno()).st_size  # 0 for a pipe or /dev/zero: the bounded read decides
            data = b"" if size > max_bytes else _read_at_most(f, max_bytes + 1)
    else:
        reader = RangeReader(url, 0, 0, options, stats if stats is not None else Counter())
        if max_bytes is None:
            return reader._fetch(0, None)
        size = reader.size() or 0
        data = b"" if size > max_bytes else reader._fetch(0, None, cap=max_bytes + 1)
    if size > max_bytes or len(data) > max_bytes:
        held = f"{size} bytes" if size > max_bytes else f"more than {max_bytes} bytes"
        raise TooLargeError(f"{redact(url)}: {held}, over the limit of {max_bytes} bytes")
    return data


def download(url: str, size: int, dst: io.BufferedWriter, options: StorageOptions, stats: Counter) -> str:
    """A whole shard of `size` bytes into `dst`, block by block with retries; its sha256
    (computed while writing). A server that ignores Range gets one plain GET instead."""
    digest = hashlib.sha256()
    try:
        with open_range(url, 0, size, options, stats) as src:
            for block in iter(lambda: src.read(1 << 20), b""):
                digest.update(block)
                dst.write(block)
        return digest.hexdigest()
    except RangeNotSupportedError:
        if protocol_of(url) not in ("http", "https"):
            raise
        stats["whole_downloads"] += 1
        where = redact(url.rsplit("/", 1)[0])
        if where not in _warned:  # once per dataset and process, not once per shard
            _warned.add(where)
            log.warning("%s: the server ignores Range requests; downloading whole shards into the cache", where)
    return _download_whole(url, size, dst, options, stats)


def _download_whole(url: str, size: int, dst: io.BufferedWriter, options: StorageOptions, stats: Counter) -> str:
    fs, path = filesystem(url, options)
    wait = options.backoff_s
    for attempt in range(options.retries + 1):
        dst.seek(0)
        dst.truncate()
        digest = hashlib.sha256()
        try:
            written = fsspec.asyn.sync(fs.loop, _http_stream, fs, path, size, dst, digest)
            if written != size:
                raise EOFError(f"{written} bytes received, index.json says {size}")
            return digest.hexdigest()
        except Exception as exc:  # noqa: BLE001 (classified like a block's errors)
            if not is_transient(exc) or attempt == options.retries:
                stats["failed_reads"] += 1
                raise ShardReadError(f"downloading the whole shard failed after {attempt + 1} attempt(s): "
                                     f"{type(exc).__name__}: {redact(str(exc))[:300]}", shard=redact(url)) from None
            stats["retries"] += 1
            time.sleep(wait * _jitter.uniform(0.5, 1.0))
            wait = min(wait * 2, options.max_backoff_s)
    raise AssertionError("unreachable")


async def _http_stream(fs, path: str, size: int, dst, digest) -> int:
    """One plain GET of a file into dst: the bytes received (at most size + 1: a longer body
    is not read further). Never writes more than `size`, the cache's reservation."""
    session = await fs.set_session()
    async with session.get(fs.encode_url(path), **fs.kwargs) as r:
        if r.status == 404:
            raise FileNotFoundError(path)
        r.raise_for_status()
        written = 0
        while True:
            block = await r.content.read(min(1 << 20, size + 1 - written))
            if not block:
                return written
            if written + len(block) > size:
                return written + len(block)
            digest.update(block)
            dst.write(block)
            written += len(block)
