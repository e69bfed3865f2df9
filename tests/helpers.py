"""Independent readers (GNU tar layout, the FFmpeg CLI) and a writer shortcut for tests."""

from __future__ import annotations

import json
import os
import subprocess
import tarfile

import numpy as np

from shardwriter.encode import EncodeSettings
from shardwriter.job import WriteConfig, write_dataset

VIEWS = ("front", "left", "right")


def ffmpeg_frames(path: str, width: int, height: int) -> np.ndarray:
    """Decode a video with the FFmpeg CLI (the independent reference) -> [T, H, W, 3] uint8."""
    raw = subprocess.run(
        ["ffmpeg", "-v", "error", "-threads", "1", "-i", path, "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
        check=True, capture_output=True,
    ).stdout
    return np.frombuffer(raw, np.uint8).reshape(-1, height, width, 3)


def read_shard(path: str) -> dict[str, dict[str, bytes]]:
    """key -> {suffix: bytes}, grouping members at the first dot of the name."""
    samples: dict[str, dict[str, bytes]] = {}
    with tarfile.open(path) as tar:
        for member in tar:
            key, _, suffix = member.name.partition(".")
            samples.setdefault(key, {})[suffix] = tar.extractfile(member).read()
    return samples


def read_dataset(out: str) -> tuple[dict, dict[str, dict[str, bytes]]]:
    with open(os.path.join(out, "index.json")) as f:
        index = json.load(f)
    samples = {}
    for shard in index["shardlist"]:
        samples.update(read_shard(os.path.join(out, shard["url"])))
    return index, samples


def write(src: str, out: str, **kw) -> object:
    workers = kw.pop("workers", 1)
    engine = kw.pop("engine", None)
    run_frames = kw.pop("run_frames", None)
    kw.setdefault("max_video_frames", 30)
    kw.setdefault("shard_bytes", 150_000)
    kw.setdefault("encode", EncodeSettings(gop=8))
    return write_dataset(src, out, WriteConfig(**kw), workers=workers, engine=engine, run_frames=run_frames)


def rebuild_shard(out: str, mutate, shard_index: int = 0, tar_format: int = tarfile.USTAR_FORMAT, patch=None) -> None:
    """Rewrite one shard with `mutate(samples)` applied ({key: {suffix: bytes}}, in order),
    and update index.json (offsets, sizes, sha256), as a hostile or buggy writer would.
    `patch(raw) -> raw` edits the tar's bytes in place afterwards (same length)."""
    import hashlib
    import io

    with open(os.path.join(out, "index.json")) as f:
        index = json.load(f)
    entry = index["shardlist"][shard_index]
    path = os.path.join(out, entry["url"])
    samples = read_shard(path)
    members = mutate(samples)  # -> list of (name, bytes) or tarfile.TarInfo with data
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tar_format) as tar:
        for name, data in members:
            info = name if isinstance(name, tarfile.TarInfo) else tarfile.TarInfo(name)
            info.size = len(data) if info.isreg() else 0
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    raw = buf.getvalue()
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        firsts: dict[str, int] = {}
        ends: dict[str, int] = {}
        for m in tar.getmembers():
            key = m.name.partition(".")[0]
            firsts.setdefault(key, m.offset)
            ends[key] = m.offset_data + -(-m.size // 512) * 512
    if patch is not None:
        raw = patch(raw)
    with open(path, "wb") as f:
        f.write(raw)
    for s in entry["samples"]:
        if s["key"] in firsts:
            s["offset"], s["size"] = firsts[s["key"]], ends[s["key"]] - firsts[s["key"]]
    entry["filesize"], entry["sha256"] = len(raw), hashlib.sha256(raw).hexdigest()
    with open(os.path.join(out, "index.json"), "w") as f:
        json.dump(index, f)


def members_of(samples: dict) -> list:
    return [(f"{k}.{suffix}", data) for k, parts in samples.items() for suffix, data in sorted(parts.items())]
