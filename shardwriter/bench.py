"""`vidshard bench`: measurements with their baseline taken in the same run.

Writer case: frames/s of the shard writer in one process pinned to one core, next to the
FFmpeg CLI transcoding the same source frames with the same libx264 settings on the same
core. Reader memory comes from `streaming.bench`.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from fractions import Fraction

from .encode import EncodeSettings
from .synth import synth_source

CORE = 0


def _pinned(cmd: list[str]) -> list[str]:
    return ["taskset", "-c", str(CORE), *cmd] if shutil.which("taskset") else cmd


def ffmpeg_transcode_fps(paths: list[str], frames: int, settings: EncodeSettings, out_dir: str) -> float:
    """FFmpeg CLI, one thread to decode and one to encode, same x264 options as the writer."""
    opts = settings.codec_options()
    params = ":".join(f"{k}={v}" for k, v in (("keyint", opts["g"]), ("min-keyint", opts["keyint_min"]),
                                              ("scenecut", "0"), ("bframes", "0"), ("threads", "1")))
    start = time.perf_counter()
    for i, path in enumerate(paths):
        subprocess.run(
            _pinned(["ffmpeg", "-v", "error", "-y", "-threads", "1", "-i", path, "-c:v", "libx264",
                     "-preset", opts["preset"], "-crf", opts["crf"], "-x264-params", params,
                     "-movflags", "+faststart", os.path.join(out_dir, f"ref{i}.mp4")]),
            check=True,
        )
    return frames * len(paths) / (time.perf_counter() - start)


def writer_fps(source: str, output: str, frames_total: int, max_video_frames: int, settings: EncodeSettings) -> float:
    """The whole `vidshard write` job (scan, encode, shards, manifest) in one worker process."""
    cmd = [sys.executable, "-m", "shardwriter.cli", "-q", "write", source, output,
           "--max-video-frames", str(max_video_frames), "--workers", "1", "--gop", str(settings.gop),
           "--crf", str(settings.crf), "--preset", settings.preset]
    start = time.perf_counter()
    subprocess.run(_pinned(cmd), check=True)
    return frames_total / (time.perf_counter() - start)


def bench_writer(quick: bool) -> dict:
    videos, frames, size = (2, 300, (224, 224)) if quick else (4, 1500, (224, 224))
    views = ("front", "left", "right")
    settings = EncodeSettings()
    with tempfile.TemporaryDirectory(prefix="vidshard-bench-") as tmp:
        src = os.path.join(tmp, "src")
        synth_source(src, videos=videos, frames=frames, views=views, size=size, fps=Fraction(30), keypoints=False)
        paths = sorted(os.path.join(src, "videos", v, f"{view}.mp4") for v in os.listdir(os.path.join(src, "videos")) for view in views)
        total = videos * frames * len(views)
        ref = ffmpeg_transcode_fps(paths, frames, settings, tmp)
        ours = writer_fps(src, os.path.join(tmp, "out"), total, 500, settings)
    return {
        "dataset": f"{videos} videos x {len(views)} views x {frames} frames, {size[0]}x{size[1]}, H.264 source",
        "cases": [
            {"name": "writer (vidshard write, 1 worker, 1 core)", "frames_per_s": round(ours, 1), "cores": 1},
            {"name": "ffmpeg CLI transcode, same x264 settings, 1 core", "frames_per_s": round(ref, 1), "cores": 1},
        ],
        "ratios": {"writer_vs_ffmpeg": round(ours / ref, 3)},
    }


def machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"


def run(quick: bool, json_out: str | None) -> dict:
    from streaming.bench import reader_memory

    result = {"machine": machine(), "date": time.strftime("%Y-%m-%d"), "writer": bench_writer(quick)}
    for case in result["writer"]["cases"]:
        print(f"{case['name']:<55} {case['frames_per_s']:>9.1f} frames/s")
    print(f"writer_vs_ffmpeg = {result['writer']['ratios']['writer_vs_ffmpeg']:.3f}")
    sizes = ([300, 1200], 96, 300) if quick else ([1000, 10000], 224, 1000)
    result["reader_memory"] = reader_memory(*sizes)
    for row in result["reader_memory"]:
        print(f"chunk mode, {row['chunk_frames']}-frame 3-view {row['size']}px chunks, {row['source_frames']}-frame source: "
              f"peak RSS {row['peak_rss_mb']} MB = {row['baseline_rss_mb']} MB after imports + "
              f"{row['streaming_rss_mb']} MB streaming (one item: {row['item_mb']} MB)")
    if json_out:
        with open(json_out, "w") as f:
            json.dump(result, f, indent=1)
    return result
