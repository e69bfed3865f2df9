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
    kw.setdefault("max_video_frames", 30)
    kw.setdefault("shard_bytes", 150_000)
    kw.setdefault("encode", EncodeSettings(gop=8))
    return write_dataset(src, out, WriteConfig(**kw), workers=workers)
