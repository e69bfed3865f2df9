"""The read path's first stage, the shard list: index.json (read bounded, checked) and the
shard URLs a dataset reads."""

from __future__ import annotations

import collections
import dataclasses
import json
import os
import posixpath
from collections import Counter
from collections.abc import Sequence

import braceexpand

from .errors import ShardNotFound
from .format import INDEX_NAME, Manifest
from .ranges import RangeReader
from .remote import StorageOptions, protocol_of, redact
from .tario import Limits


class TooLargeError(ValueError):
    """A file over the byte limit its reader was given (read_bytes' max_bytes)."""


def _join(base: str, name: str) -> str:
    return posixpath.join(base, name) if base else name


def resolve_source(source: str | Sequence[str], storage: StorageOptions = StorageOptions(),
                   limits: Limits = Limits()) -> tuple[Manifest, list[str]]:
    """(manifest, absolute shard URLs) for an OUTPUT dir, its index.json, or shard URLs.

    Shard URLs (a list or a brace pattern) select a subset of the shards listed by the
    index.json beside them; the manifest is needed for exact epoch lengths and offsets.
    """
    if isinstance(source, str) and "{" not in source and not source.endswith(".tar"):
        index_url = source if source.endswith(".json") else _join(source.rstrip("/"), INDEX_NAME)
        manifest = load_manifest(index_url, storage, limits.max_index_bytes)
        base = posixpath.dirname(index_url)
        return manifest, [_join(base, s.url) for s in manifest.shards]
    urls = [u for pattern in ([source] if isinstance(source, str) else source) for u in braceexpand.braceexpand(pattern)]
    if not urls:
        raise ValueError("no shard URLs given")
    base = posixpath.dirname(urls[0])
    if any(posixpath.dirname(u) != base for u in urls):
        raise ValueError("shard URLs must share one folder (with its index.json)")
    manifest = load_manifest(_join(base, INDEX_NAME), storage, limits.max_index_bytes)
    by_name = {s.url: s for s in manifest.shards}
    # By name, as they are looked up: "a/shard-000000.tar" and "a//shard-000000.tar" are one shard,
    # which would deliver its samples twice per epoch.
    repeated = sorted(n for n, count in collections.Counter(posixpath.basename(u) for u in urls).items() if count > 1)
    if repeated:
        raise ValueError(redact(f"shards given more than once: {repeated[:5]}"))
    missing = [u for u in urls if posixpath.basename(u) not in by_name]
    if missing:
        raise ValueError(redact(f"shards not listed in {_join(base, INDEX_NAME)}: {missing[:5]}"))
    shards = [by_name[posixpath.basename(u)] for u in urls]
    return dataclasses.replace(manifest, shards=shards), urls


def load_manifest(url: str, storage: StorageOptions = StorageOptions(), max_bytes: int = Limits().max_index_bytes) -> Manifest:
    """index.json, refused (ValueError) when it holds more than `max_bytes` before it is read whole."""
    try:
        data = read_bytes(url, storage, max_bytes=max_bytes)
    except (FileNotFoundError, ShardNotFound):  # a local path; a URL (remote.retry's verdict on a 404, no such key)
        raise FileNotFoundError(f"{redact(url)}: no such index.json (write the dataset with `vidshard write`)") from None
    except TooLargeError as exc:
        raise ValueError(f"{exc} (streaming.tario.Limits.max_index_bytes)") from None
    try:
        raw = json.loads(data)
    except ValueError as exc:
        raise ValueError(f"{redact(url)}: not valid JSON ({exc})") from None
    try:
        return Manifest.from_json(raw)
    except ValueError as exc:
        raise ValueError(f"{redact(url)}: {exc}") from None


def read_bytes(url: str, options: StorageOptions, stats: Counter | None = None, max_bytes: int | None = None) -> bytes | bytearray:
    """A whole (small) file, e.g. index.json, with the storage's retries. With `max_bytes`, a
    larger file is refused (TooLargeError naming it, its size and the limit) by its size where
    the storage tells it, before reading; in any case at most max_bytes + 1 bytes are read,
    and held once (a file without a size, an endless body: the bound is on what is held)."""
    if protocol_of(url) == "file":
        with open(url.removeprefix("file://"), "rb") as f:
            if max_bytes is None:
                return f.read()
            size = os.fstat(f.fileno()).st_size  # 0 for a pipe or /dev/zero: the bounded read decides
            data = b"" if size > max_bytes else _read_at_most(f, max_bytes + 1)
    else:
        reader = RangeReader(url, 0, 0, options, stats if stats is not None else Counter())
        if max_bytes is None:
            return reader.fetch(0, None)
        size = reader.size() or 0
        data = b"" if size > max_bytes else reader.fetch(0, None, cap=max_bytes + 1)
    if size > max_bytes or len(data) > max_bytes:
        held = f"{size} bytes" if size > max_bytes else f"more than {max_bytes} bytes"
        raise TooLargeError(f"{redact(url)}: {held}, over the limit of {max_bytes} bytes")
    return data


def _read_at_most(f, n: int) -> bytearray:
    """Up to n bytes, in pieces into one growing buffer: f.read(n) reserves all n bytes first
    (1 GiB for a 2 KB index.json), and joining a list of pieces holds the bytes twice (2 GiB
    held for an endless file under a 1 GiB limit)."""
    data = bytearray()
    while len(data) < n and (piece := f.read(min(1 << 20, n - len(data)))):
        data += piece
    return data
