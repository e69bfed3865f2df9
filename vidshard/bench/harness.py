"""`vidshard bench [--quick | --smoke] [--json OUT] [--out-md OUT]`: every figure next to its baseline,
measured in the same run. Each case runs in its own process (vidshard/bench/cases.py),
first pinned to one core, then with every core.

Cases: the original loader (re-implemented with PyAV) for whole videos, 1000 and 500-frame
chunks; vidshard chunk mode, segment mode (16 frames), keypoints only; the FFmpeg CLI decoding
the same clips to rgb24 and a raw read of the shard bytes (the limits); the writer against
the FFmpeg CLI transcoding the same frames; a memory sweep over source lengths; a soak; shuffle
quality, resume planning and items/s per shuffle scheme (bench/shuffle.py); random access
against streaming items/s, local and S3 (bench/random_access.py).
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from fractions import Fraction

from tqdm import tqdm

from shardwriter.encode import EncodeSettings
from vidshard.synth import synth_source


@dataclasses.dataclass(frozen=True, kw_only=True)
class Sizes:
    videos: int
    frames: int
    size: int
    chunks: tuple[int, int]  # the two max_video_frames ("1000" and "500")
    sweep: tuple[int, ...]  # source lengths of the memory sweep
    soak_epochs: int


FULL = Sizes(videos=8, frames=3000, size=224, chunks=(1000, 500), sweep=(1000, 3000, 10000, 30000), soak_epochs=20)
QUICK = Sizes(videos=2, frames=600, size=96, chunks=(200, 100), sweep=(200, 600, 1200, 2400), soak_epochs=3)
# CI's smoke test: every case runs and every ratio is reported, in about a minute; its figures mean nothing.
SMOKE = Sizes(videos=1, frames=120, size=48, chunks=(40, 20), sweep=(40, 120), soak_epochs=2)
LEVELS = {"full": FULL, "quick": QUICK, "smoke": SMOKE}
VIEWS = ("front", "left", "right")


def _pinned(cmd: list[str]) -> list[str]:
    return ["taskset", "-c", str(min(os.sched_getaffinity(0))), *cmd] if shutil.which("taskset") else cmd


def case(args: dict) -> dict:
    out = subprocess.run([sys.executable, "-m", "vidshard.bench.cases", json.dumps(args)], capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"bench case {args['case']} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def ffmpeg_transcode_fps(paths: list[str], frames: int, settings: EncodeSettings, out_dir: str) -> float:
    """FFmpeg CLI, one thread to decode and one to encode, the writer's libx264 settings."""
    opts = settings.codec_options()
    params = f"keyint={opts['g']}:min-keyint={opts['keyint_min']}:scenecut=0:bframes=0:threads=1"
    start = time.perf_counter()
    for i, path in enumerate(paths):
        subprocess.run(_pinned(["ffmpeg", "-v", "error", "-y", "-threads", "1", "-i", path, "-c:v", "libx264", "-preset",
                                opts["preset"], "-crf", opts["crf"], "-x264-params", params, "-movflags", "+faststart",
                                os.path.join(out_dir, f"ref{i}.mp4")]), check=True)
    return frames * len(paths) / (time.perf_counter() - start)


def write_fps(source: str, output: str, max_video_frames: int, frames_total: int) -> float:
    """The whole `vidshard write` job (scan, encode, keypoints, shards, manifest), 1 worker, 1 core."""
    cmd = [sys.executable, "-m", "vidshard", "-q", "write", source, output, "--max-video-frames", str(max_video_frames),
           "--workers", "1"]
    start = time.perf_counter()
    subprocess.run(_pinned(cmd), check=True, capture_output=True)
    return frames_total / (time.perf_counter() - start)


def extract_clips(shards: str, into: str) -> list[tuple[str, int]]:
    """Every clip of a written dataset as a file (for the FFmpeg CLI), with its frame count."""
    import tarfile

    with open(os.path.join(shards, "index.json")) as f:
        index = json.load(f)
    frames = {s["key"]: s["nframes"] for sh in index["shardlist"] for s in sh["samples"]}
    clips = []
    for sh in index["shardlist"]:
        with tarfile.open(os.path.join(shards, sh["url"])) as tar:
            for m in tar:
                if m.name.endswith(".mp4"):
                    path = os.path.join(into, m.name)
                    with open(path, "wb") as f:
                        f.write(tar.extractfile(m).read())
                    clips.append((path, frames[m.name.partition(".")[0]]))
    return clips


def reader_cases(s: Sizes, src: str, shards: dict[int, str], clips, raw, cores: int) -> list[dict]:
    big, small = s.chunks
    specs = [
        ("baseline, whole video, segments", {"case": "baseline", "source": src, "max_video_frames": None, "num_frames": 16}),
        (f"baseline, {big}-frame chunks, segments", {"case": "baseline", "source": src, "max_video_frames": big, "num_frames": 16}),
        (f"baseline, {small}-frame chunks, segments", {"case": "baseline", "source": src, "max_video_frames": small, "num_frames": 16}),
        (f"vidshard chunk mode ({big})", {"case": "vidshard", "shards": shards[big], "mode": "chunk"}),
        (f"vidshard chunk mode ({small})", {"case": "vidshard", "shards": shards[small], "mode": "chunk"}),
        (f"vidshard segment mode, 16 frames ({big})", {"case": "vidshard", "shards": shards[big], "mode": "segment", "num_frames": 16}),
        (f"vidshard keypoints only ({big})", {"case": "vidshard", "shards": shards[big], "mode": "keypoints"}),
        (f"limit: FFmpeg CLI -> rgb24, same clips ({big})", {"case": "ffmpeg", "clips": clips}),
        (f"limit: raw shard bytes ({big})", {"case": "raw", "shards_raw": raw}),
    ]
    rows = []
    for name, args in tqdm(specs, desc=f"cases, {cores} core(s)", disable=None):
        result = case({**args, "cores": cores})
        rows.append({"name": name, "cores": cores, **{k: result.get(k) for k in
                     ("items_per_s", "frames_per_s", "peak_rss_mb", "first_item_s", "oom", "decoded_per_delivered")}})
    return rows


def memory_sweep(s: Sizes, tmp: str) -> list[dict]:
    from shardwriter.job import WriteConfig, write_dataset

    rows = []
    for frames in tqdm(s.sweep, desc="memory sweep", disable=None):
        src, out = os.path.join(tmp, f"sweep-src-{frames}"), os.path.join(tmp, f"sweep-out-{frames}")
        synth_source(src, videos=1, frames=frames, size=(s.size, s.size), keypoints=False)
        write_dataset(src, out, WriteConfig(max_video_frames=s.chunks[0]), workers=min(2, os.cpu_count() or 1))
        base = case({"case": "baseline", "source": src, "max_video_frames": None, "cores": 1})
        ours = case({"case": "vidshard", "shards": out, "mode": "chunk", "cores": 1})
        rows.append({"source_frames": frames, "baseline_whole_video_rss_mb": None if base.get("oom") else base["peak_rss_mb"],
                     "baseline_oom": bool(base.get("oom")), "vidshard_chunk_rss_mb": ours["peak_rss_mb"]})
        shutil.rmtree(src)
        shutil.rmtree(out)
    return rows


ONLY = {"workers": "workers", "gop": "gop", "train_step": "train_step", "sweep": "reader", "long_video": "write_split"}


def run(level: str, json_out: str | None, md_out: str | None = None, only_engines: bool = False,
        only_shuffle: bool = False, only_random_access: bool = False, only: str | None = None) -> dict:
    if only is not None:  # cases of their own, each a module with report(level) and markdown(result)
        import importlib

        module = importlib.import_module(f"vidshard.bench.{ONLY[only]}")
        result = {"machine": machine(), "date": time.strftime("%Y-%m-%d"), "level": level, only: module.report(level)}
        _emit(result, "\n".join([f"Machine: {result['machine']}. Date: {result['date']}.",
                                  *module.markdown(result[only])]) + "\n", json_out, md_out)
        return result
    if not only_engines:  # the shuffle and random-access cases read from a local S3 server: checked before any work
        from vidshard.bench.shuffle import require_local_s3

        require_local_s3("vidshard bench" + (" --shuffle" if only_shuffle else " --random-access" if only_random_access else ""))
    if only_random_access:
        from vidshard.bench import random_access

        result = {"machine": machine(), "date": time.strftime("%Y-%m-%d"), "level": level,
                  "random_access": random_access.report(level)}
        _emit(result, "\n".join([f"Machine: {result['machine']}. Date: {result['date']}.",
                                  *random_access.markdown(result["random_access"])]) + "\n", json_out, md_out)
        return result
    if only_shuffle:
        from vidshard.bench.shuffle import markdown as shuffle_markdown
        from vidshard.bench.shuffle import report as shuffle_report

        result = {"machine": machine(), "date": time.strftime("%Y-%m-%d"), "level": level, "shuffle": shuffle_report(level)}
        _emit(result, "\n".join([f"Machine: {result['machine']}. Date: {result['date']}.",
                                  *shuffle_markdown(result["shuffle"])]) + "\n", json_out, md_out)
        return result
    if only_engines:
        rows = engines()
        for r in rows:
            print(f"{r['engine']:<6} {r['cpus']} CPU(s): {r['frames_per_s']:>8.1f} frames/s; dataset "
                  f"{r['dataset_bytes'] / 1e6:.1f} MB, driver job I/O {r['driver_job_bytes'] / 1e6:.3f} MB "
                  f"({100 * r['driver_job_bytes'] / r['dataset_bytes']:.1f}%), start-up "
                  f"{r['driver_startup_bytes'] / 1e6:.1f} MB, driver peak RSS {r['driver_peak_rss_mb']} MB")
        return {"engines": rows}
    from vidshard.bench.reader import soak
    from vidshard.bench.shuffle import report as shuffle_report

    from shardwriter.job import WriteConfig, write_dataset

    s = LEVELS[level]
    ncores = len(os.sched_getaffinity(0))
    result: dict = {"machine": machine(), "date": time.strftime("%Y-%m-%d"), "level": level, "sizes": dataclasses.asdict(s)}
    with tempfile.TemporaryDirectory(prefix="vidshard-bench-") as tmp:
        src = os.path.join(tmp, "src")
        synth_source(src, videos=s.videos, frames=s.frames, views=VIEWS, size=(s.size, s.size), fps=Fraction(30))
        total = s.videos * s.frames * len(VIEWS)
        paths = sorted(os.path.join(src, "videos", v, f"{view}.mp4") for v in os.listdir(os.path.join(src, "videos")) for view in VIEWS)
        shards = {n: os.path.join(tmp, f"out-{n}") for n in s.chunks}
        # The writer against FFmpeg on the video path alone (the same source without its
        # keypoint files), then the whole source, keypoints included, for the record.
        video_only = os.path.join(tmp, "src-video-only")
        os.makedirs(video_only)
        for part in ("videos", "annotations"):
            os.symlink(os.path.join(src, part), os.path.join(video_only, part))
        writer = write_fps(video_only, os.path.join(tmp, "out-video-only"), s.chunks[0], total)
        writer_kpt = write_fps(src, shards[s.chunks[0]], s.chunks[0], total)
        ffmpeg_enc = ffmpeg_transcode_fps(paths, s.frames, EncodeSettings(), tmp)
        write_dataset(src, shards[s.chunks[1]], WriteConfig(max_video_frames=s.chunks[1]), workers=min(2, ncores))
        os.makedirs(os.path.join(tmp, "clips"))
        clips = extract_clips(shards[s.chunks[0]], os.path.join(tmp, "clips"))
        with open(os.path.join(shards[s.chunks[0]], "index.json")) as f:
            index = json.load(f)
        raw = [(os.path.join(shards[s.chunks[0]], sh["url"]), sh["nsamples"], sh["nframes"] * len(VIEWS)) for sh in index["shardlist"]]
        cases = []
        for cores in [1] if level == "smoke" else sorted({1, ncores}):  # the ratios use the 1-core cases
            cases += reader_cases(s, src, shards, clips, raw, cores)
        cases += [{"name": "vidshard write, 1 worker", "cores": 1, "frames_per_s": writer},
                  {"name": "vidshard write, 1 worker, with per-frame keypoint files", "cores": 1, "frames_per_s": writer_kpt},
                  {"name": "FFmpeg CLI transcode, same x264 settings", "cores": 1, "frames_per_s": ffmpeg_enc}]
        result["cases"] = cases
        result["memory_sweep"] = memory_sweep(s, tmp)
    result["soak"] = soak(s.soak_epochs)
    result["shuffle"] = shuffle_report(level)
    from vidshard.bench import random_access

    result["random_access"] = random_access.report(level)
    result["ratios"] = ratios(result, s)
    _emit(result, markdown(result), json_out, md_out)
    return result


def engines(videos: int = 8, frames: int = 600, size: int = 96) -> list[dict]:
    """Writer throughput of the local engine and of Ray with 1 and 2 CPUs, in one run, and the
    driver's own I/O (its job phase; see vidshard/bench/driverio.py) against the dataset's bytes.

    The source is the barcode source with film grain (FFmpeg's noise filter), so clips take
    the bytes of real footage rather than of flat grey cells.
    """
    import ray

    from shardwriter.job import WriteConfig, write_dataset
    from shardwriter.ray_engine import job_runtime_env, ray_engine
    from vidshard.bench.driverio import DriverMeter

    rows = []
    with tempfile.TemporaryDirectory(prefix="vidshard-engines-") as tmp:
        src = os.path.join(tmp, "src")
        synth_source(src, videos=videos, frames=frames, size=(size, size), fps=Fraction(30), keypoints=False)
        for path in sorted(os.path.join(r, f) for r, _, fs in os.walk(os.path.join(src, "videos")) for f in fs):
            subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", path, "-vf", "noise=alls=24:allf=t", "-c:v", "libx264",
                            "-threads", "1", path + ".mp4"], check=True)
            os.replace(path + ".mp4", path)
        total = videos * frames * len(VIEWS)
        config = WriteConfig(max_video_frames=200, shard_bytes=8 << 20, mix_videos=4)
        for cpus in (1, 2):
            for name in ("local", "ray"):
                out = os.path.join(tmp, f"{name}-{cpus}")
                engine = None
                if name == "ray":
                    ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False, runtime_env=job_runtime_env())
                    engine = ray_engine()
                meter = DriverMeter()
                start = time.perf_counter()
                report = write_dataset(src, out, config, workers=cpus, engine=engine, on_phase=meter.mark)
                seconds = time.perf_counter() - start
                d = meter.result()
                rows.append({"engine": name, "cpus": cpus, "frames_per_s": round(total / seconds, 1),
                             "dataset_bytes": report.bytes, "driver_job_bytes": d.total_bytes,
                             "driver_startup_bytes": d.startup_read_bytes + d.startup_written_bytes,
                             "driver_peak_rss_mb": round(d.peak_rss_bytes / 2**20, 1)})
                if name == "ray":
                    ray.shutdown()
                shutil.rmtree(out)
    return rows


def ratios(result: dict, s: Sizes) -> dict:
    by = {(c["name"], c["cores"]): c for c in result["cases"]}
    big = s.chunks[0]
    chunk = by[(f"vidshard chunk mode ({big})", 1)]
    item_bytes = len(VIEWS) * big * 3 * s.size * s.size
    sweep = result["memory_sweep"]
    return {
        "chunk_vs_ffmpeg_1core": round(chunk["frames_per_s"] / by[(f"limit: FFmpeg CLI -> rgb24, same clips ({big})", 1)]["frames_per_s"], 3),
        "segment_vs_baseline_1000": round(by[(f"vidshard segment mode, 16 frames ({big})", 1)]["items_per_s"]
                                          / by[(f"baseline, {big}-frame chunks, segments", 1)]["items_per_s"], 2),
        "rss_over_item_bytes": round(chunk["peak_rss_mb"] * 2**20 / item_bytes, 3),
        "rss_growth_1k_to_30k": round(sweep[-1]["vidshard_chunk_rss_mb"] / sweep[0]["vidshard_chunk_rss_mb"], 3),
        "writer_vs_ffmpeg": round(by[("vidshard write, 1 worker", 1)]["frames_per_s"]
                                  / by[("FFmpeg CLI transcode, same x264 settings", 1)]["frames_per_s"], 3),
    }


def _fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def markdown(result: dict) -> str:
    s = result["sizes"]
    lines = [f"Machine: {result['machine']}. Date: {result['date']}. Dataset: {s['videos']} videos x 3 views x "
             f"{s['frames']} frames, {s['size']}x{s['size']}, 30 fps, H.264 (default GOP, B-frames).", "",
             "| case | cores | items/s | frames/s | peak RSS (MB) | first item (s) | decoded per delivered frame |",
             "|---|---|---|---|---|---|---|"]
    for c in result["cases"]:
        if c.get("oom"):
            lines.append(f"| {c['name']} | {c['cores']} | out of memory | | | | |")
            continue
        lines.append(f"| {c['name']} | {c['cores']} | {_fmt(c.get('items_per_s'), '.2f')} | {_fmt(c.get('frames_per_s'), '.0f')} | "
                     f"{_fmt(c.get('peak_rss_mb'), '.0f')} | {_fmt(c.get('first_item_s'), '.2f')} | "
                     f"{_fmt(c.get('decoded_per_delivered'), '.2f')} |")
    lines += ["", "| source frames | baseline whole video peak RSS (MB) | vidshard chunk mode peak RSS (MB) |", "|---|---|---|"]
    for r in result["memory_sweep"]:
        base = "out of memory (12 GiB data limit)" if r["baseline_oom"] else f"{r['baseline_whole_video_rss_mb']:.0f}"
        lines.append(f"| {r['source_frames']} | {base} | {r['vidshard_chunk_rss_mb']:.0f} |")
    lines += ["", f"Soak ({len(result['soak']['epochs'])} epochs, 2 persistent workers): RSS growth "
              f"{result['soak']['rss_growth_mb_per_epoch']} MB/epoch, open fds constant: {result['soak']['fds_constant']}.", "",
              "| ratio | value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in result["ratios"].items()]
    if "shuffle" in result:
        from vidshard.bench.shuffle import markdown as shuffle_markdown

        lines += shuffle_markdown(result["shuffle"])
    if "random_access" in result:
        from vidshard.bench import random_access

        lines += random_access.markdown(result["random_access"])
    return "\n".join(lines) + "\n"


def _emit(result: dict, text: str, json_out: str | None, md_out: str | None) -> None:
    print(text)
    if json_out:
        with open(json_out, "w") as f:
            json.dump(result, f, indent=1)
    if md_out:
        with open(md_out, "w") as f:
            f.write(text)


def machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
