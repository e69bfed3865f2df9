"""Reader measurements beyond the per-case runs of vidshard/bench/cases.py: the
max_video_frames sweep of docs/training.md (`vidshard bench --sweep`) and the soak of many epochs.

The torch runtime alone is several hundred MB of RSS, so the sweep gives the peak, the
baseline after imports, and the difference: what streaming itself holds.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from fractions import Fraction


def _measure_first_item(shards: str) -> dict:
    """Load time and peak RSS of one chunk-mode item (all frames, all views)."""
    import time

    import torch  # noqa: F401

    from streaming.dataset import VideoShardDataset
    from vidshard.bench.memory import peak_rss_mb

    baseline = peak_rss_mb()
    ds = VideoShardDataset(shards, shuffle=False)
    start = time.perf_counter()
    item = next(iter(ds))
    elapsed = time.perf_counter() - start
    return {"load_s": round(elapsed, 3), "frames": int(item["video"].shape[1]), "item_mb": round(item["video"].numel() / 2**20, 1),
            "peak_rss_mb": round(peak_rss_mb(), 1), "streaming_rss_mb": round(peak_rss_mb() - baseline, 1)}


def chunk_size_sweep(frames: int, size: int, chunk_sizes: list[int | None]) -> list[dict]:
    """The original's table, re-measured: one 3-view source, each max_video_frames."""
    from shardwriter.job import WriteConfig, write_dataset
    from vidshard.synth import synth_source

    rows = []
    with tempfile.TemporaryDirectory(prefix="vidshard-sweep-") as tmp:
        src = os.path.join(tmp, "src")
        synth_source(src, videos=1, frames=frames, size=(size, size), fps=Fraction(30), keypoints=False)
        for n in chunk_sizes:
            out = os.path.join(tmp, f"out-{n}")
            write_dataset(src, out, WriteConfig(max_video_frames=n), workers=min(2, os.cpu_count() or 1))
            proc = subprocess.run([sys.executable, "-m", "vidshard.bench.reader", "first-item", out], check=True, capture_output=True, text=True)
            rows.append({"max_video_frames": n, **json.loads(proc.stdout)})
    return rows


# (source frames, size, max_video_frames values) per level: docs/training.md's table is the full one
SWEEP = {"full": (3000, 224, [None, 2000, 1000, 500]), "quick": (600, 96, [None, 300, 100]), "smoke": (60, 48, [None, 30])}


def report(level: str) -> dict:
    """`vidshard bench --sweep`: chunk_size_sweep at this level's sizes."""
    frames, size, chunks = SWEEP[level]
    return {"frames": frames, "size": size, "rows": chunk_size_sweep(frames, size, chunks)}


def markdown(result: dict) -> list[str]:
    lines = ["", f"max_video_frames sweep: one {result['frames']}-frame, 3-view, {result['size']}x{result['size']} source, one "
             "chunk-mode item (all frames, all views) decoded in one process:", "",
             "| max_video_frames | load time / item (s) | decoded item (MB) | held by the loader (MB) | peak RSS (MB) |",
             "|---|---|---|---|---|"]
    for r in result["rows"]:
        lines.append(f"| {r['max_video_frames'] or 'whole video'} | {r['load_s']} | {r['item_mb']} | {r['streaming_rss_mb']} | "
                     f"{r['peak_rss_mb']} |")
    return lines


def soak(epochs: int, videos: int = 6, frames: int = 600, size: int = 96) -> dict:
    """Many epochs through 2 persistent workers: RSS and open fds per epoch, per worker."""
    from torch.utils.data import DataLoader

    from shardwriter.job import WriteConfig, write_dataset
    from vidshard.synth import synth_source

    from streaming.collation import collate
    from streaming.dataset import VideoShardDataset
    from vidshard.bench.memory import process_usage, worker_pids

    with tempfile.TemporaryDirectory(prefix="vidshard-soak-") as tmp:
        src, out = os.path.join(tmp, "src"), os.path.join(tmp, "out")
        synth_source(src, videos=videos, frames=frames, size=(size, size), fps=Fraction(30))
        write_dataset(src, out, WriteConfig(max_video_frames=200, shard_bytes=2 * 10**6), workers=min(2, os.cpu_count() or 1))
        ds = VideoShardDataset(out, sample="segment", num_frames=8, load_kpt=True, shuffle_buffer="4MB")
        loader = DataLoader(ds, batch_size=4, num_workers=2, persistent_workers=True, collate_fn=collate)
        rows = []
        for epoch in range(epochs):
            ds.set_epoch(epoch)
            items = sum(len(b["meta"]) for b in loader)
            usage = [process_usage(pid) for pid in worker_pids()]
            rows.append({"epoch": epoch, "items": items, "worker_rss_mb": [round(u["rss_mb"], 1) for u in usage],
                         "worker_fds": [u["fds"] for u in usage]})
        del loader
    first, last = rows[1], rows[-1]  # epoch 0 includes first-use allocations
    growth = max(b - a for a, b in zip(first["worker_rss_mb"], last["worker_rss_mb"])) / max(1, len(rows) - 2)
    return {"epochs": rows, "rss_growth_mb_per_epoch": round(growth, 3),
            "fds_constant": all(r["worker_fds"] == rows[0]["worker_fds"] for r in rows)}


if __name__ == "__main__":
    if sys.argv[1:2] == ["first-item"]:
        print(json.dumps(_measure_first_item(sys.argv[2])))
    else:
        sys.exit(f"usage: python -m vidshard.bench.reader first-item SHARDS (got {sys.argv[1:]})")
