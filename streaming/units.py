"""Human-readable sizes ("256MB", "1GiB") for shard sizes, buffers and caches."""

from __future__ import annotations

import re

_UNITS = {"": 1, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "KI": 2**10, "MI": 2**20, "GI": 2**30, "TI": 2**40}
_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]I?)?B?\s*", re.IGNORECASE)


def parse_bytes(value: int | str) -> int:
    """`1GB` = 10**9, `1GiB` = 2**30, a plain number = bytes. Raises ValueError showing the value."""
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 0:
            raise ValueError(f"a size must be >= 0, got {value}")
        return value
    match = _SIZE.fullmatch(str(value))
    if match is None:
        raise ValueError(f"cannot read {value!r} as a size (examples: 1GB, 256MB, 512MiB, 1000000)")
    number, unit = match.groups()
    return int(float(number) * _UNITS[(unit or "").upper()])
