"""Reading tar members as untrusted data: checked names, types and sizes, strict grouping.

webdataset's tar iterator skips links and devices without a word and accepts path-like
names; a shard from elsewhere gets stricter treatment here. Every member must be a regular
file named `<key>.<suffix>` with a safe key (no '/', no '..', no absolute path), at most
`max_member_bytes` long (checked from the header, before reading); a sample's members must
be adjacent and not repeated. Anything else is a ShardFormatError naming shard and member.
Member names are only ever compared, never used as file paths.

Every read tarfile makes goes through a `Span`, which bounds it: a header read (long names,
pax records) may ask for at most `HEADER_READ_BYTES`, a member's data at most the size its
checked header declared, so no declared size allocates memory before a limit has passed it.
Members are read with one allocation each (tarfile's seekable mode over the span; its
stream mode joins 10 KiB records and holds a member twice).
"""

from __future__ import annotations

import io
import re
import tarfile
from collections.abc import Callable, Iterator
from typing import IO

from .errors import SampleError, ShardFormatError
from .format import Limits  # noqa: F401  (defined with the format: the writer applies them too)

SAFE_MEMBER = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*\.[A-Za-z0-9_.-]+")
# Suffixes the reader understands; anything else (e.g. .pyd, .pickle, .pth) is never read.
KNOWN_SUFFIX = re.compile(r"(meta\.json|timeline\.json|[A-Za-z0-9_-]+\.(mp4|kpt\.npz))")
HEADER_READ_BYTES = 1 << 20  # one tar header record (a GNU long name, a pax header): far above any real one
_REGULAR = (tarfile.REGTYPE, tarfile.AREGTYPE)
# What tarfile lets escape from hostile headers besides TarError: int() of a pax
# GNU.sparse.map that is not numbers (ValueError), and a chain of extended headers (GNU
# long names, pax), which it reads by recursing once per header (RecursionError).
_HEADER_ERRORS = (ValueError, RecursionError)


def kind_limit(suffix: str, limits: Limits) -> int:
    """The byte limit of a member by its kind: JSON members max_json_bytes, others max_member_bytes."""
    return limits.max_json_bytes if suffix.endswith(".json") else limits.max_member_bytes


def check_member(info: tarfile.TarInfo, url: str, limits: Limits, limit: int | None = None) -> tuple[str, str]:
    """(key, suffix) of a member that may be read; ShardFormatError otherwise. `limit`
    overrides the byte limit of the member's kind (the caller may know a tighter one)."""
    name = info.name
    if not info.isreg() or info.type not in _REGULAR or info.sparse is not None:
        kind = "symlink" if info.issym() else "hardlink" if info.islnk() else "device file" if info.isdev() else \
            "directory" if info.isdir() else "sparse file" if info.sparse is not None else f"type {info.type!r}"
        raise ShardFormatError(f"member is a {kind}, not a regular file", shard=url, member=name)
    if not SAFE_MEMBER.fullmatch(name) or ".." in name:
        raise ShardFormatError("member name is not <key>.<suffix> (paths, '..' and odd characters are refused)",
                               shard=url, member=name)
    key, _, suffix = name.partition(".")
    if limit is None:
        limit = kind_limit(suffix, limits)
    if info.size > limit:
        raise ShardFormatError(f"member declares {info.size} bytes, over the limit of {limit}", shard=url, key=key, member=name)
    return key, suffix


class Span:
    """[0, length) of a forward-only byte stream as the seekable file tarfile wants.

    Seeks only go forward (skipped bytes are read and dropped, or seeked over when the
    stream can seek); `allow(n)` sets how much one read may ask for.
    """

    def __init__(self, src: IO[bytes], length: int, url: str):
        self.src, self.length, self.url = src, length, url
        self.pos = 0
        self.max_read = HEADER_READ_BYTES

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def allow(self, n: int) -> None:
        self.max_read = max(n, HEADER_READ_BYTES)

    def read(self, n: int | None = -1) -> bytes:
        left = self.length - self.pos
        if n is None or n < 0:
            n = left
        if n > self.max_read:  # what the record declares, however little of it the range holds
            raise ShardFormatError(f"a tar record asks to read {n} bytes at once, over the limit of {self.max_read}", shard=self.url)
        data = self.src.read(min(n, left))
        self.pos += len(data)
        return data

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        target = offset if whence == io.SEEK_SET else self.pos + offset if whence == io.SEEK_CUR else self.length + offset
        if target < self.pos:
            raise ShardFormatError(f"tar record points backwards (to byte {target} from {self.pos})", shard=self.url)
        self.skip(min(target, self.length) - self.pos)
        return self.pos

    def skip(self, n: int) -> None:
        if n > 0 and self.src.seekable():
            self.src.seek(n, io.SEEK_CUR)
            self.pos += n
            return
        while n > 0:
            block = self.src.read(min(n, 1 << 20))
            if not block:
                return
            self.pos += len(block)
            n -= len(block)

    def drain(self) -> None:
        """Move to the end of the span: the source stands at the next span's first byte."""
        self.skip(self.length - self.pos)

    def close(self) -> None:
        pass


def iter_members(
    fileobj: IO[bytes], url: str, limits: Limits, want: Callable[[str], bool] = lambda suffix: True,
    limit: Callable[[str], int | None] = lambda suffix: None,
) -> Iterator[tuple[str, str, int, bytes | None]]:
    """(key, suffix, declared size, data) of every member of a tar file, in order, each one
    checked (`check_member`; a sample's members adjacent and not repeated). `data` is read
    for wanted known suffixes only, None for the others (passed over, seeked past where the
    file can seek): `vidshard ls` lists every member's size without reading clips.

    `fileobj` must be seekable forward (a local or fsspec file, or a `Span`). `limit(suffix)`
    may give a member kind a tighter byte limit than `limits`.
    """
    span = fileobj if isinstance(fileobj, Span) else None
    key = None
    seen: set[str] = set()  # suffixes of the current sample, read or passed over
    finished: set[str] = set()
    member = last = None  # the member being read; the last one whose header was read
    try:
        with tarfile.open(fileobj=fileobj, mode="r:") as tar:
            for info in tar:
                member = info.name
                member_key, suffix = check_member(info, url, limits, limit(info.name.partition(".")[2]))
                if member_key != key:
                    if key is not None:
                        finished.add(key)
                    if member_key in finished:
                        raise ShardFormatError(f"members of {member_key!r} are not adjacent in the shard", shard=url,
                                               key=member_key, member=member)
                    key, seen = member_key, set()
                if suffix in seen:
                    raise ShardFormatError("duplicate member in one sample", shard=url, key=key, member=member)
                seen.add(suffix)
                data = None
                if KNOWN_SUFFIX.fullmatch(suffix) and want(suffix):
                    if span is not None:
                        span.allow(info.size)
                    data = tar.extractfile(info).read()
                    if span is not None:
                        span.allow(0)
                last, member = member, None
                yield key, suffix, info.size, data
    except SampleError as exc:
        raise exc.at(key=key) from None
    except (tarfile.TarError, EOFError, *_HEADER_ERRORS) as exc:
        # Between members, tarfile fails on the next header or on the seek past the last
        # member's data: a shard cut inside that member's data (truncated) ends here, so
        # the error names it.
        where = "" if member or not last else " in or after this member"
        raise ShardFormatError(f"not a readable tar{where} ({type(exc).__name__}: {str(exc)[:200]})", shard=url, key=key,
                               member=member or last) from None


def iter_samples(
    fileobj: IO[bytes], url: str, limits: Limits, want: Callable[[str], bool] = lambda suffix: True,
    limit: Callable[[str], int | None] = lambda suffix: None,
) -> Iterator[dict]:
    """Samples ({"__key__", suffix: bytes}) of a tar file, from `iter_members` (same
    arguments); only wanted known suffixes are read."""
    key = None
    data: dict[str, bytes] = {}
    for member_key, suffix, _, payload in iter_members(fileobj, url, limits, want, limit):
        if member_key != key:
            if key is not None:
                yield {"__key__": key, **data}
            key, data = member_key, {}
        if payload is not None:
            data[suffix] = payload
    if key is not None:
        yield {"__key__": key, **data}


def read_sample(span: Span, url: str, key: str, limits: Limits, want: Callable[[str], bool] = lambda suffix: True,
                limit: Callable[[str], int | None] = lambda suffix: None) -> dict:
    """The one sample `key` whose tar records fill `span` (its byte range from index.json).

    Errors name `key` even where the bytes do not say which sample they belong to. The
    caller drains the span (`span.drain()`) to read the next sample from the same stream.
    """
    try:
        found = None
        for sample in iter_samples(span, url, limits, want, limit):
            if sample["__key__"] != key or found is not None:
                raise ShardFormatError(f"found sample {sample['__key__']!r} in the byte range index.json gives {key!r}",
                                       shard=url, key=key)
            found = sample
        if found is None:
            raise ShardFormatError("no member in the byte range index.json gives the sample", shard=url, key=key)
        return found
    except SampleError as exc:
        raise exc.at(key=key) from None
