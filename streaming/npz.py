"""Keypoint archives (`<view>.kpt.npz`) read as untrusted data.

`np.load` allocates whatever an `.npy` header declares and decompresses whatever a zip
entry holds: a 200-byte archive can ask for terabytes, a deflate bomb expands a thousand
times. Here every size is checked against what index.json implies before anything is
allocated: the member's bytes against `npz_bound` (the arrays of `nframes` frames of the
schema, plus zip overhead), each entry's declared uncompressed size and each `.npy` header's
shape and dtype against the schema, and the data is read with a bound (zipfile never
returns more than an entry declares, and only stored or deflated entries, the two numpy
writes, are read: zipfile decompresses a bzip2 or LZMA chunk whole before it truncates).
The schema's own sizes are bounded by `max_bytes`. Nothing is unpickled.
"""

from __future__ import annotations

import io
import math
import struct
import zipfile
import zlib

import numpy as np

from .errors import KeypointError
from .format import ENTRY_OVERHEAD, MASK, expected_arrays, npz_bound

# What zipfile and the .npy header parser raise on damaged bytes (the header is a Python
# literal read with ast.literal_eval, hence SyntaxError).
_ERRORS = (ValueError, OSError, EOFError, KeyError, IndexError, SyntaxError, NotImplementedError, TypeError,
           RecursionError, zipfile.BadZipFile, zlib.error, struct.error)


def read_keypoints(data: bytes, schema: dict, nframes: int, frames: np.ndarray | slice, *, max_bytes: int, shard: str, key: str,
                   view: str) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """({array name: values at `frames`}, mask at `frames`) of one view's archive. `max_bytes`
    bounds what the schema may ask for: index.json is untrusted too, and its shapes size
    every read below."""
    member = f"{key}.{view}.kpt.npz"

    def refuse(why: str) -> KeypointError:
        return KeypointError(why, shard=shard, key=key, view=view, member=member)

    bound = npz_bound(schema, nframes)
    if bound > max_bytes:
        raise refuse(f"index.json's keypoint schema implies {bound} bytes for {nframes} frames, over the limit of {max_bytes}")
    if len(data) > bound:
        raise refuse(f"{len(data)} bytes, more than the {bound} that index.json's keypoint schema allows for {nframes} frames")
    expected = expected_arrays(schema, nframes)
    out: dict[str, np.ndarray] = {}
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            names = zf.namelist()
            if sorted(names) != sorted(expected):
                raise refuse(f"arrays {sorted(names)} differ from index.json's schema {sorted(expected)}")
            for info in zf.infolist():
                # numpy writes stored or deflated entries. zipfile bounds a deflate stream
                # by the entry's declared size, but bzip2 and LZMA chunks are decompressed
                # whole (785 bytes of bzip2 hold 1 GiB); an encrypted entry raises RuntimeError.
                if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED) or info.flag_bits & 0x1:
                    raise refuse(f"{info.filename}: compression method {info.compress_type}"
                                 f"{' (encrypted)' if info.flag_bits & 0x1 else ''} is not read (numpy writes stored or deflated)")
            for name, (shape, dtype) in expected.items():
                out[name[: -len(".npy")]] = _read_entry(zf, name, shape, dtype, refuse)[frames]
    except KeypointError:
        raise
    except _ERRORS as exc:
        raise refuse(f"unreadable ({type(exc).__name__}: {exc})") from None
    return out, out.pop(MASK)


def _read_entry(zf: zipfile.ZipFile, name: str, shape: tuple[int, ...], dtype: np.dtype, refuse) -> np.ndarray:
    nbytes = math.prod(shape) * dtype.itemsize
    info = zf.getinfo(name)
    if info.file_size > nbytes + ENTRY_OVERHEAD:
        raise refuse(f"{name} declares {info.file_size} bytes uncompressed; {shape} {dtype.str} takes {nbytes}")
    with zf.open(info) as f:  # zipfile stops at the declared size, whatever the deflate stream holds
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            declared, fortran, declared_dtype = np.lib.format.read_array_header_1_0(f, max_header_size=ENTRY_OVERHEAD)
        elif version == (2, 0):
            declared, fortran, declared_dtype = np.lib.format.read_array_header_2_0(f, max_header_size=ENTRY_OVERHEAD)
        else:
            raise refuse(f"{name}: .npy format version {version} is not read")
        if declared_dtype.hasobject:
            raise refuse(f"{name} holds Python objects (pickled data is never loaded)")
        if tuple(declared) != shape or declared_dtype != dtype:
            raise refuse(f"{name} declares shape {tuple(declared)} {declared_dtype.str}; index.json implies {shape} {dtype.str}")
        raw = f.read(nbytes)
    if len(raw) != nbytes:
        raise refuse(f"{name} ends after {len(raw)} of its {nbytes} bytes")
    return np.frombuffer(raw, dtype=dtype).reshape(shape, order="F" if fortran else "C")
