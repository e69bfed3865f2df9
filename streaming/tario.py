"""Reading tar members as untrusted data: checked names, types and sizes, strict grouping.

webdataset's tar iterator skips links and devices without a word and accepts path-like
names; a shard from elsewhere gets stricter treatment here. Every member must be a regular
file named `<key>.<suffix>` with a safe key (no '/', no '..', no absolute path), at most
`max_member_bytes` long (checked from the header, before reading); a sample's members must
be adjacent and not repeated. Anything else is a ShardFormatError naming shard and member.
Member names are only ever compared, never used as file paths.
"""

from __future__ import annotations

import dataclasses
import re
import tarfile
from collections.abc import Callable, Iterator
from typing import IO

from .errors import ShardFormatError

SAFE_MEMBER = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*\.[A-Za-z0-9_.-]+")
# Suffixes the reader understands; anything else (e.g. .pyd, .pickle, .pth) is never read.
KNOWN_SUFFIX = re.compile(r"(meta\.json|timeline\.json|[A-Za-z0-9_-]+\.(mp4|kpt\.npz))")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Limits:
    """Bounds applied to untrusted shards (docs/security.md)."""

    max_member_bytes: int = 2 * 1024**3  # one member (a clip of a long chunk at high resolution fits)
    max_json_bytes: int = 16 * 1024**2  # meta.json / timeline.json
    max_frame_pixels: int = 8192 * 8192  # width x height of one decoded frame
    max_item_bytes: int = 32 * 1024**3  # V x T x 3 x H x W of one decoded item


def check_member(info: tarfile.TarInfo, url: str, limits: Limits) -> tuple[str, str]:
    """(key, suffix) of a member that may be read; ShardFormatError otherwise."""
    name = info.name
    if not info.isreg():
        kind = "symlink" if info.issym() else "hardlink" if info.islnk() else "device file" if info.isdev() else \
            "directory" if info.isdir() else f"type {info.type!r}"
        raise ShardFormatError(f"member {name!r} is a {kind}, not a regular file", shard=url)
    if not SAFE_MEMBER.fullmatch(name) or ".." in name:
        raise ShardFormatError(f"member name {name!r} is not <key>.<suffix> (paths, '..' and odd characters are refused)", shard=url)
    key, _, suffix = name.partition(".")
    limit = limits.max_json_bytes if suffix.endswith(".json") else limits.max_member_bytes
    if info.size > limit:
        raise ShardFormatError(f"member {name!r} declares {info.size} bytes, over the limit of {limit}", shard=url, key=key)
    return key, suffix


def iter_samples(
    fileobj: IO[bytes], url: str, limits: Limits, want: Callable[[str], bool] = lambda suffix: True
) -> Iterator[dict]:
    """Samples ({"__key__", suffix: bytes}) of a tar stream; only wanted known suffixes are read."""
    key = None
    data: dict[str, bytes] = {}
    seen: set[str] = set()  # suffixes of the current sample, read or passed over
    finished: set[str] = set()
    try:
        with tarfile.open(fileobj=fileobj, mode="r|") as tar:
            for info in tar:
                member_key, suffix = check_member(info, url, limits)
                if member_key != key:
                    if key is not None:
                        finished.add(key)
                        yield {"__key__": key, **data}
                    if member_key in finished:
                        raise ShardFormatError(f"members of {member_key!r} are not adjacent in the shard", shard=url, key=member_key)
                    key, data, seen = member_key, {}, set()
                if suffix in seen:
                    raise ShardFormatError(f"duplicate member {info.name!r} in one sample", shard=url, key=key)
                seen.add(suffix)
                if KNOWN_SUFFIX.fullmatch(suffix) and want(suffix):
                    data[suffix] = tar.extractfile(info).read()
    except tarfile.TarError as exc:
        raise ShardFormatError(f"not a readable tar ({exc})", shard=url, key=key) from None
    if key is not None:
        yield {"__key__": key, **data}
