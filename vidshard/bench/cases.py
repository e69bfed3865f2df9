"""One benchmark case per process: `python -m vidshard.bench.cases '<json args>'`.

The process pins itself to one core or leaves every core (os.sched_setaffinity), caps its
data memory (RLIMIT_DATA, so a whole-video baseline fails with MemoryError instead of taking
the machine down), runs the case, and prints one JSON line: items, frames, elapsed,
first_item_s, peak_rss_mb (the largest of this process and its DataLoader workers).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import resource
import subprocess
import sys
import time
from collections.abc import Iterator

import numpy as np


def original_chunks(source: str, max_video_frames: int | None, segment_frames: int | None) -> Iterator[tuple[int, int]]:
    """The original loader, faithfully: per chunk and view, open the ORIGINAL video, seek to
    the chunk's start in seconds, decode to its end, RGB uint8 TCHW; stack the views; split by
    the timeline. Yields (items, frames decoded) per chunk: one item per chunk, or per
    segment when segment_frames is set."""
    import av
    import torch

    from shardwriter.plan import check_timeline, chunk_plan, clip_timeline
    from shardwriter.source import probe_view
    from streaming.sampling import uniform

    videos_dir = os.path.join(source, "videos")
    for vid in sorted(os.listdir(videos_dir)):
        paths = [os.path.join(videos_dir, vid, f) for f in sorted(os.listdir(os.path.join(videos_dir, vid)))]
        probe = probe_view(vid, paths[0])
        with open(os.path.join(source, "annotations", f"{vid}.json")) as f:
            timeline = check_timeline(json.load(f)["timeline"], probe.num_frames)
        for start, end in chunk_plan(probe.num_frames, max_video_frames):
            start_sec, end_sec = start / probe.fps, end / probe.fps
            views = []
            for path in paths:
                with av.open(path) as container:
                    stream = container.streams.video[0]
                    stream.thread_type = "AUTO"
                    container.seek(int(start_sec / stream.time_base), stream=stream, backward=True)
                    frames = [frame.to_ndarray(format="rgb24") for frame in _between(container.decode(stream), start_sec, end_sec)]
                views.append(torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2))  # TCHW
            video = torch.stack(views)  # V, T, C, H, W
            if segment_frames is None:
                yield 1, video.shape[0] * video.shape[1]
                continue
            items = 0
            for seg in clip_timeline(timeline, start, end):
                _ = video[:, uniform(seg.start, seg.end, segment_frames)].contiguous()  # the item
                items += 1
            yield items, video.shape[0] * video.shape[1]
            del video, views


def _between(frames, start_sec, end_sec):
    for frame in frames:
        if frame.time < start_sec - 1e-9:
            continue
        if frame.time >= end_sec - 1e-9:
            return
        yield frame


def _vidshard(args: dict, cores: int, extra: dict) -> Iterator[tuple[int, int]]:
    from torch.utils.data import DataLoader

    from streaming import VideoShardDataset
    from streaming.options import StreamOptions

    mode = args["mode"]
    if args.get("copy_items"):  # the path before items were decoded into shared memory, measured beside it
        _decode_into_private_memory()
    if args.get("fresh_items"):  # shared memory, but a fresh buffer per item (every slot of streaming.pool "out")
        import streaming.pool

        streaming.pool.Pool.lend = lambda self, shape: None
    ds = VideoShardDataset(args["shards"], sample="chunk" if mode == "keypoints" else mode,
                           num_frames=args.get("num_frames"), load_rgb=mode != "keypoints", load_kpt=mode == "keypoints",
                           shuffle_buffer=args.get("shuffle_buffer", StreamOptions().shuffle_buffer), decode_threads=1)
    views = len(ds.options.views)
    starts = multiprocessing.Array("d", 2 * cores)  # each worker's (pid, RSS) when it starts (fork leaves file pages unmapped)

    def note_start(worker: int) -> None:
        from vidshard.bench.memory import process_usage

        starts[2 * worker], starts[2 * worker + 1] = os.getpid(), process_usage(os.getpid())["rss_mb"]

    source = ds if cores == 1 else DataLoader(ds, batch_size=None, num_workers=cores,  # prefetch_factor: the default, 2
                                              persistent_workers=True, worker_init_fn=note_start)
    for _ in range(args.get("warmup_epochs", 0)):  # workers started, caches warm: what every later epoch of a run sees
        for _ in source:
            pass
        yield WARM
    for _ in range(args.get("timed_epochs", 1)):
        for item in source:  # the user's loop: the previous item is held while the next one is made
            yield 1, len(item["frame_index"]) * views
    if cores > 1:
        from vidshard.bench.memory import children_peak_rss_mb

        peaks = children_peak_rss_mb()  # while the workers live (persistent)
        extra["worker_peak_rss_mb"] = round(max(peaks.values(), default=0.0), 1)
        extra["worker_growth_mb"] = round(max(peaks[int(starts[2 * w])] - starts[2 * w + 1] for w in range(cores)), 1)
    if cores == 1 and ds.stats["frames_delivered"]:  # workers count in their own processes
        extra["decoded_per_delivered"] = round(ds.stats["frames_decoded"] / ds.stats["frames_delivered"], 3)


WARM = (0, 0)  # yielded by a case when its warm-up epochs are done


def _decode_into_private_memory() -> None:
    """Workers decode into their own memory, as before: pickling each item copies it into
    fresh shared memory (the bench's "items copied" rows)."""
    import dataclasses

    import streaming.world

    detect = streaming.world.World.detect
    streaming.world.World.detect = classmethod(lambda cls: dataclasses.replace(detect(), in_worker=False))


def _ffmpeg(args: dict, cores: int) -> Iterator[tuple[int, int]]:
    clips = args["clips"]  # [(path, frames)]
    for i in range(0, len(clips), cores):
        batch = clips[i : i + cores]
        procs = [subprocess.Popen(["ffmpeg", "-v", "error", "-threads", "1", "-i", path, "-f", "rawvideo", "-pix_fmt",
                                   "rgb24", "-"], stdout=subprocess.DEVNULL) for path, _ in batch]
        for proc, (_, frames) in zip(procs, batch):
            if proc.wait() != 0:
                raise RuntimeError("ffmpeg failed")
            yield 1, frames


def _raw(args: dict, cores: int) -> Iterator[tuple[int, int]]:
    for path, samples, frames in args["shards_raw"]:
        with open(path, "rb") as f:
            while f.read(1 << 22):
                pass
        yield samples, frames


def run_case(args: dict) -> dict:
    cores = args.get("cores", 1)
    allowed = sorted(os.sched_getaffinity(0))
    os.sched_setaffinity(0, allowed[:cores])
    os.environ["OMP_NUM_THREADS"] = str(cores)
    limit = int(args.get("mem_limit_gb", 12) * 2**30)
    resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))
    import torch

    torch.set_num_threads(cores)
    kind = args["case"]
    extra: dict = {}  # what a case measures besides speed (the decoder's frames decoded per delivered)
    source = {
        "baseline": lambda: original_chunks(args["source"], args["max_video_frames"], args.get("num_frames")),
        "vidshard": lambda: _vidshard(args, cores, extra),
        "ffmpeg": lambda: _ffmpeg(args, cores),
        "raw": lambda: _raw(args, cores),
    }[kind]()
    items = frames = 0
    first = None
    start = time.perf_counter()
    try:
        for n_items, n_frames in source:
            if (n_items, n_frames) == WARM:  # the timed epoch starts now
                start, first = time.perf_counter(), None
                continue
            items += n_items
            frames += n_frames
            first = first if first is not None else time.perf_counter() - start
    except (MemoryError, RuntimeError) as exc:  # torch's allocator raises RuntimeError
        if isinstance(exc, RuntimeError) and "allocate memory" not in str(exc):
            raise
        return {"oom": True, "mem_limit_gb": args.get("mem_limit_gb", 12), "peak_rss_mb": _peak()}
    elapsed = time.perf_counter() - start
    return {"items": items, "frames": frames, "elapsed": elapsed, "first_item_s": first, "peak_rss_mb": _peak(),
            "items_per_s": items / elapsed, "frames_per_s": frames / elapsed, **extra}


def _peak() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # finished DataLoader workers
    return round(max(own, children) / 1024, 1)


if __name__ == "__main__":
    print(json.dumps(run_case(json.loads(sys.argv[1]))))
