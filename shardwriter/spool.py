"""Spooled samples: each chunk sample is spooled as the exact tar bytes it will have in its
shard (member headers and padded data, no end-of-archive blocks), so a shard is the
concatenation of its samples' fragments plus the end blocks, and every sample's offset and
size in index.json is taken from the bytes actually written: a long member name gets a
PAX header, and its sample's size says so.

Member headers are fixed (mtime 0, owner vidshard, mode 0444, PAX format as tarfile writes
it) and members sorted by name, so the same members give the same bytes.
"""

from __future__ import annotations

import hashlib
import shutil
import tarfile
from collections.abc import Iterable
from typing import IO

from .errors import WriterError
from .plan import TAR_BLOCK, tar_file_bytes

SPOOL = "spool"  # under the work store: spool/<key>.tar


def fragment_name(key: str) -> str:
    return f"{SPOOL}/{key}.tar"


def member_header(name: str, size: int) -> bytes:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = size, 0, 0o444
    info.uname = info.gname = "vidshard"
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


def write_fragment(out: IO[bytes], key: str, members: Iterable[tuple[str, bytes | str]]) -> int:
    """Write one sample's members (suffix -> bytes, or a local file path) as tar records; bytes written."""
    written = 0
    for suffix, data in sorted(members):
        name = f"{key}.{suffix}"
        if isinstance(data, bytes):
            size = len(data)
            out.write(member_header(name, size))
            out.write(data)
        else:
            with open(data, "rb") as src:
                size = src.seek(0, 2)
                src.seek(0)
                out.write(member_header(name, size))
                shutil.copyfileobj(src, out, 1 << 20)
        pad = -size % TAR_BLOCK
        out.write(b"\0" * pad)
        written += len(member_header(name, size)) + size + pad
    return written


class _Tee:
    """A read-only stream that copies what is read into `out` and a hash."""

    def __init__(self, src: IO[bytes], out: IO[bytes], digest):
        self.src, self.out, self.digest, self.count = src, out, digest, 0

    def read(self, n: int = -1) -> bytes:
        data = self.src.read(n)
        self.out.write(data)
        self.digest.update(data)
        self.count += len(data)
        return data


def copy_fragment(src: IO[bytes], out: IO[bytes], digest, key: str, where: str) -> int:
    """Copy one spooled fragment into a shard, checking that it is exactly `key`'s members
    framed as tar records (names, sizes, nothing before, between or after); its byte size."""
    tee = _Tee(src, out, digest)
    end = 0
    try:
        with tarfile.open(fileobj=tee, mode="r|") as tar:
            for info in tar:
                if info.name.partition(".")[0] != key or not info.isreg() or info.offset != end:
                    raise WriterError(f"{where}: member {info.name!r} at byte {info.offset} does not belong to sample {key!r}")
                end = info.offset_data + -(-info.size // TAR_BLOCK) * TAR_BLOCK
    except tarfile.TarError as exc:
        raise WriterError(f"{where}: spooled sample {key!r} is not tar records ({exc})") from None
    while tee.read(1 << 20):  # tarfile may stop reading short of the end
        pass
    if end == 0 or tee.count != end:
        raise WriterError(f"{where}: spooled sample {key!r} has {tee.count} bytes, its members end at {end}")
    return end


def end_of_archive(payload: int) -> bytes:
    """The two zero blocks and the record padding that close a tar of `payload` bytes."""
    return b"\0" * (tar_file_bytes(payload) - payload)


def new_digest():
    return hashlib.sha256()
