"""Random access (`VideoShardMapDataset`, items in a seeded random order, as a sampler asks
for them) beside streaming (`VideoShardDataset`, one shuffled epoch), in items/s of one
in-process reader: local disk, a local S3 server (moto, as bench/shuffle.py starts it), and
the same S3 through the node cache.

Each round runs every reader on the same data back to back; figures are medians over
rounds, and `vs_stream` the median of each round's ratio, so a busier moment of the machine
hits both alike. With the cache each round starts from an empty cache folder: its figures
include downloading every shard once.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from fractions import Fraction

import numpy as np

MODES = {"chunk (decode)": dict(load_rgb=True), "keypoints only (reading)": dict(load_rgb=False, load_kpt=True)}


def _stream_items_per_s(make) -> float:
    ds = make()
    start, count = time.perf_counter(), 0
    for _ in ds:
        count += 1
    return count / (time.perf_counter() - start)


def _random_items_per_s(make, seed: int = 0) -> float:
    ds = make()
    order = np.random.default_rng([seed, 9]).permutation(len(ds))
    start = time.perf_counter()
    for i in order.tolist():
        ds[i]
    return len(order) / (time.perf_counter() - start)


def throughput(level: str) -> list[dict]:
    from shardwriter.job import WriteConfig, write_dataset
    from streaming import VideoShardDataset, VideoShardMapDataset
    from vidshard.bench.shuffle import local_s3
    from vidshard.synth import synth_source

    rounds = 5 if level == "full" else 1
    rows = []
    with tempfile.TemporaryDirectory(prefix="vidshard-random-") as tmp:
        src, out = os.path.join(tmp, "src"), os.path.join(tmp, "out")
        synth_source(src, videos=4, frames={"full": 300, "quick": 150, "smoke": 60}[level], size=(64, 64), fps=Fraction(30))
        write_dataset(src, out, WriteConfig(max_video_frames=20, shard_bytes=300_000), workers=1)
        with local_s3(out, "ds") as s3:
            for source_name, url, cached in (("local disk", out, False), ("S3 (moto)", s3, False),
                                             ("S3 (moto) + cache, from empty", s3, True)):
                for mode_name, kw in MODES.items():
                    def kwargs() -> dict:
                        if not cached:
                            return kw
                        cache = os.path.join(tmp, "cache")
                        shutil.rmtree(cache, ignore_errors=True)
                        return {**kw, "cache_dir": cache}

                    runs = []
                    for r in range(rounds):
                        runs.append({
                            "stream": _stream_items_per_s(lambda: VideoShardDataset(url, seed=r, **kwargs())),
                            "random": _random_items_per_s(lambda: VideoShardMapDataset(url, **kwargs()), seed=r),
                        })
                    rows.append({"source": source_name, "mode": mode_name,
                                 "stream_items_per_s": round(float(np.median([x["stream"] for x in runs])), 1),
                                 "random_items_per_s": round(float(np.median([x["random"] for x in runs])), 1),
                                 "vs_stream": round(float(np.median([x["random"] / x["stream"] for x in runs])), 3),
                                 "rounds": rounds})
    return rows


def report(level: str) -> dict:
    from vidshard.bench.shuffle import require_local_s3

    require_local_s3("the random-access bench")
    return {"throughput": throughput(level)}


def markdown(result: dict) -> list[str]:
    rows = result["throughput"]
    lines = ["", f"Random access vs streaming (one process, {rows[0]['rounds'] if rows else 0} round(s), median; "
             "random access: every item once, in a seeded random order):", "",
             "| source | mode | streaming items/s | random access items/s | random / streaming |", "|---|---|---|---|---|"]
    lines += [f"| {r['source']} | {r['mode']} | {r['stream_items_per_s']} | {r['random_items_per_s']} | {r['vs_stream']:.2f} |"
              for r in rows]
    return lines


if __name__ == "__main__":
    print("\n".join(markdown(report("quick" if "--quick" in sys.argv else "full"))))
