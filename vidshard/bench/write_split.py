"""`vidshard bench --long-video`: one long 3-view session written with 1 and with 2 workers,
same source, same run: the writer cuts the video into runs of chunks (shardwriter/plan.py
cut_runs), so a second worker speeds up even a dataset of one video. Both outputs must be
byte-identical; the ratio is the 2-worker job's frames/s over the 1-worker job's.

The source is the barcode source with film grain, in two versions: keyframes every 30
frames (1 s, as phones and action cameras write) and every 250 (libx264's default). A run
entering mid-file decodes up to a GOP before its first frame and after its last (to check
the count at a keyframe), and the ratio pays for that.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import time
from fractions import Fraction

from vidshard.bench.harness import VIEWS
from vidshard.synth import synth_source

# (frames, size, max_video_frames) per level
LEVELS = {"full": (3000, 224, 100), "quick": (1500, 128, 100), "smoke": (120, 48, 20)}


def _digests(out: str) -> dict[str, str]:
    return {n: hashlib.sha256(open(os.path.join(out, n), "rb").read()).hexdigest() for n in sorted(os.listdir(out))}


def report(level: str) -> dict:
    frames, size, chunk = LEVELS[level]
    cores = len(os.sched_getaffinity(0))
    rows = []
    for gop in (30,) if level == "smoke" else (30, 250):
        with tempfile.TemporaryDirectory(prefix="vidshard-bench-long-") as tmp:
            src = os.path.join(tmp, "src")
            synth_source(src, videos=1, frames=frames, views=VIEWS, size=(size, size), fps=Fraction(30), keypoints=False)
            for root, _, files in os.walk(os.path.join(src, "videos")):
                for name in files:
                    path = os.path.join(root, name)
                    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", path, "-vf", "noise=alls=24:allf=t", "-c:v",
                                    "libx264", "-g", str(gop), "-threads", "1", path + ".mp4"], check=True)
                    os.replace(path + ".mp4", path)
            outs, timed = {}, []
            for workers in (1, min(2, cores)):
                out = outs[workers] = os.path.join(tmp, f"out-{workers}")
                # The CLI as a user runs it, default runs: 1 worker writes the video whole (as
                # before runs existed), 2 cut it into 2 runs per worker (plan.run_frames).
                cmd = [sys.executable, "-m", "vidshard", "-q", "write", src, out, "--max-video-frames", str(chunk),
                       "--workers", str(workers)]
                if level == "smoke" and workers > 1:  # too few frames for default runs: cut anyway, to compare bytes
                    cmd += ["--run-frames", str(2 * chunk)]
                start = time.perf_counter()
                subprocess.run(cmd, check=True, capture_output=True)
                seconds = time.perf_counter() - start
                timed.append({"gop": gop, "workers": workers, "seconds": round(seconds, 2),
                              "source_frames_per_s": round(frames * len(VIEWS) / seconds, 1)})
            identical = _digests(outs[1]) == _digests(outs[min(2, cores)])
        for r in timed:
            r["vs_one_worker"] = round(r["source_frames_per_s"] / timed[0]["source_frames_per_s"], 3)
            r["byte_identical"] = identical
        rows += timed
    return {"level": level, "frames": frames, "size": size, "max_video_frames": chunk, "cores": cores, "rows": rows}


def markdown(result: dict) -> list[str]:
    lines = ["", f"One video, 3 views x {result['frames']} frames, {result['size']}x{result['size']}, chunks of "
             f"{result['max_video_frames']}, written by `vidshard write` (default runs), on {result['cores']} cores; "
             "same source, same run:", "",
             "| source GOP | workers | seconds | source frames/s | vs 1 worker | bytes identical |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['gop']} | {r['workers']} | {r['seconds']} | {r['source_frames_per_s']} | {r['vs_one_worker']}x | "
              f"{'yes' if r['byte_identical'] else 'NO'} |" for r in result["rows"]]
    return lines
