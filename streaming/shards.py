"""Finding the manifest: index.json (bounded, checked) and the shard URLs a dataset reads."""

from __future__ import annotations

import collections
import dataclasses
import json
import posixpath
from collections.abc import Sequence

import braceexpand

from .format import INDEX_NAME, Manifest
from .remote import StorageOptions, redact
from .wholefile import TooLargeError, read_bytes
from .tario import Limits


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
    except FileNotFoundError:
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
