"""`vidshard bench --workers`: what DataLoader workers add over one in-process core, and what
a worker holds, on the same data in the same run.

Per mode (chunk, segment of 16 frames), each timed over three epochs after a first that
starts the workers, with the loop a user writes (`for item in loader:`, DataLoader defaults
but batch_size=None): one core iterating the dataset in-process (the baseline), two
DataLoader workers on two cores with items decoded into the workers' reused shared buffers
(streaming.pool: the hand-off sends a handle), the same two workers with a fresh
shared-memory buffer per item (before the pool), and with items decoded into private memory
and copied into shared memory when pickled (before that). Ratios
are items/s over the baseline; each worker's RSS growth is set beside the bound of
docs/streaming.md."""

from __future__ import annotations

import os
import tempfile
from fractions import Fraction

from streaming.pool import SLOTS
from vidshard.bench.harness import VIEWS, case
from vidshard.synth import synth_source

# (videos, frames, size, max_video_frames) per level
LEVELS = {"full": (4, 1500, 224, 300), "quick": (4, 600, 160, 150), "smoke": (1, 40, 48, 20)}
SHUFFLE_BUFFER = 64 << 20


def report(level: str) -> dict:
    from shardwriter.job import WriteConfig, write_dataset

    videos, frames, size, chunk = LEVELS[level]
    cores = min(2, len(os.sched_getaffinity(0)))
    rows = []
    with tempfile.TemporaryDirectory(prefix="vidshard-bench-workers-") as tmp:
        src, out = os.path.join(tmp, "src"), os.path.join(tmp, "out")
        synth_source(src, videos=videos, frames=frames, views=VIEWS, size=(size, size), fps=Fraction(30))
        write_dataset(src, out, WriteConfig(max_video_frames=chunk), workers=cores)
        for mode, num_frames, item_frames in (("chunk", None, chunk), ("segment", 16, 16)):
            # One epoch first (workers started, first-use allocations made), then one timed: a training run's epochs.
            # Three epochs timed: one epoch of this data is 20 chunk items or 53 segment items, under a second.
            base = {"case": "vidshard", "shards": out, "mode": mode, "num_frames": num_frames, "shuffle_buffer": SHUFFLE_BUFFER,
                    "warmup_epochs": 1, "timed_epochs": 1 if level == "smoke" else 3}
            item_mb = len(VIEWS) * item_frames * 3 * size * size / 2**20
            one = case({**base, "cores": 1})
            for label, extra in (("reused shared buffers (streaming.pool)", {}),
                                 ("fresh shared memory per item (before the pool)", {"fresh_items": True}),
                                 ("decoded privately, copied when pickled (before that)", {"copy_items": True})):
                two = case({**base, "cores": cores, **extra})
                rows.append({"mode": mode, "workers": cores, "variant": label, "items_per_s": round(two["items_per_s"], 2),
                             "one_core_items_per_s": round(one["items_per_s"], 2),
                             "vs_one_core": round(two["items_per_s"] / one["items_per_s"], 3),
                             "worker_growth_mb": two["worker_growth_mb"],
                             "item_mb": round(item_mb, 1),
                             # docs/streaming.md with batch_size=None: the window, the worker's item buffers
                             # (streaming.pool: at most SLOTS), and FFmpeg's and the stream's buffers (64 MB allowed here)
                             "bound_mb": round(SHUFFLE_BUFFER / 2**20 + SLOTS * item_mb + 64, 1)})
    return {"level": level, "videos": videos, "frames": frames, "size": size, "max_video_frames": chunk, "rows": rows}


def markdown(result: dict) -> list[str]:
    lines = ["", f"DataLoader workers against one in-process core ({result['videos']} videos x 3 views x {result['frames']} "
             f"frames, {result['size']}x{result['size']}, chunks of {result['max_video_frames']}; same data, same run):", "",
             "| mode | workers | items | items/s | one core items/s | ratio | worker RSS growth (MB) | bound (MB) | item (MB) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        lines.append(f"| {r['mode']} | {r['workers']} | {r['variant']} | {r['items_per_s']} | {r['one_core_items_per_s']} | "
                     f"{r['vs_one_core']} | {r['worker_growth_mb']} | {r['bound_mb']} | {r['item_mb']} |")
    return lines
