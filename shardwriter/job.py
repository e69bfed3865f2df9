"""The write job: scan -> per-video tasks (in parallel) -> shards -> errors.json -> index.json.

Layers: `source` validates, `task` encodes one video into a spool, `assemble` packs
shards, and this module only sequences them and owns OUTPUT's life cycle:

    OUTPUT/.vidshard-work/job.json        the configuration of the run in progress
    OUTPUT/.vidshard-work/videos/<id>/    finished tasks (kept across a kill)
    OUTPUT/shard-NNNNNN.tar               complete shards (renamed into place)
    OUTPUT/errors.json                    skipped videos (--on-error skip)
    OUTPUT/index.json                     written last: its presence means "complete"
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import errno
import hashlib
import json
import logging
import multiprocessing
import os
import shutil
from collections.abc import Callable, Iterable
from fractions import Fraction
from typing import Any

from tqdm import tqdm

from streaming.format import ERRORS_NAME, INDEX_NAME, Manifest, dumps

from .assemble import order_samples, write_shards
from .config import WriteConfig  # noqa: F401  (re-exported: `from shardwriter.job import WriteConfig`)
from .errors import SourceError, WriterError
from .source import check_source, scan_source
from .store import is_remote, open_store
from .task import VideoResult, VideoTask, run_video_task

log = logging.getLogger("vidshard.write")
WORK_DIR = ".vidshard-work"


@dataclasses.dataclass(frozen=True, kw_only=True)
class WriteReport:
    videos: int
    chunks: int
    shards: int
    skipped: list[SourceError]
    resumed: int  # video tasks found finished from an earlier run


# An engine maps the task function over tasks and yields (task, result-or-exception)
# as they complete. The local one is a process pool; a cluster engine plugs in here.
Engine = Callable[[Callable[[VideoTask], VideoResult], list[VideoTask]], Iterable[tuple[VideoTask, Any]]]


# libx264's output was seen to depend on heap garbage when several encoders live in one
# process (about 1 run in 2 differed with three views and overlap; 0 in 33 with this set).
# glibc fills every allocation with a fixed byte when MALLOC_PERTURB_ is set at process
# start, so tasks always run in spawned children that carry it.
TASK_ENV = {"MALLOC_PERTURB_": "165"}


def local_engine(workers: int) -> Engine:
    def run(fn, tasks):
        os.environ.update(TASK_ENV)  # inherited by the spawned workers; the driver is unaffected
        ctx = multiprocessing.get_context("spawn")  # fresh interpreters: no inherited locks or threads
        with cf.ProcessPoolExecutor(max_workers=max(1, workers), mp_context=ctx) as pool:
            futures = {pool.submit(fn, t): t for t in tasks}
            try:
                for fut in cf.as_completed(futures):
                    exc = fut.exception()
                    yield futures[fut], exc if exc is not None else fut.result()
            finally:
                for fut in futures:
                    fut.cancel()

    return run


def write_dataset(
    source: str, output: str, config: WriteConfig, workers: int = 1, engine: Engine | None = None, work_dir: str | None = None
) -> WriteReport:
    """Write SOURCE's chunk samples to OUTPUT (a folder, or an object-store URL).

    work_dir holds the spool and staged shards; default OUTPUT/.vidshard-work, or for an
    object store ~/.cache/vidshard/work/<hash of OUTPUT> (it must survive to resume).
    """
    if work_dir is None:
        work_dir = os.path.join(output, WORK_DIR) if not is_remote(output) else default_work_dir(output)
    try:
        return _write_dataset(source, output, config, engine or local_engine(workers), work_dir)
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise WriterError(
                f"{output}: no space left on the device ({exc.filename or exc}); nothing partial is listed: "
                "free space and re-run the same command to resume"
            ) from None
        raise


def default_work_dir(output: str) -> str:
    digest = hashlib.sha256(output.rstrip("/").encode()).hexdigest()[:16]
    return os.path.join(os.path.expanduser("~"), ".cache", "vidshard", "work", digest)


def _write_dataset(source: str, output: str, config: WriteConfig, engine: Engine, work: str) -> WriteReport:
    store = open_store(output)
    if store.exists(INDEX_NAME):
        return _already_written(store, work, config)
    listing = check_source(source, config.views)  # before job.json: a wrong SOURCE or --views records nothing
    _claim_output(store, output, work, config)

    scan = scan_source(source, config.views, config.truncate_views, config.encode.autorotate, listing)
    problems = list(scan.problems)
    if problems and config.on_error == "fail":
        _fail(problems)
    spool = os.path.join(work, "videos")
    os.makedirs(spool, exist_ok=True)
    for name in os.listdir(spool):  # tasks killed mid-way leave only these
        if name.endswith(".partial"):
            shutil.rmtree(os.path.join(spool, name))
    resumed = sum(os.path.isdir(os.path.join(spool, v.video_id)) for v in scan.videos)
    tasks = [
        VideoTask(
            spec=spec,
            max_video_frames=config.max_video_frames,
            overlap=config.overlap,
            encode=config.encode,
            keypoint_schema=scan.keypoint_schema,
            keypoint_origin=scan.keypoint_origin,
            spool_dir=spool,
        )
        # Longest first: the pool's last tasks are short, so workers finish together.
        for spec in sorted(scan.videos, key=lambda s: (-s.num_frames * len(s.views), s.video_id))
    ]
    results: list[VideoResult] = []
    with tqdm(total=len(tasks), desc="videos", unit="video", disable=None) as bar:
        for task, outcome in engine(run_video_task, tasks):
            bar.update(1)
            if isinstance(outcome, SourceError):
                if config.on_error == "fail":
                    _fail([outcome])
                problems.append(outcome)
                log.warning("skipping %s", outcome)
            elif isinstance(outcome, BaseException):
                raise outcome
            else:
                results.append(outcome)
    if not results:
        _fail(problems or [WriterError("no videos to write")])

    ordered = order_samples(results, config.seed)
    staging = os.path.join(work, "shards")
    os.makedirs(staging, exist_ok=True)
    with tqdm(desc="shards", unit="shard", disable=None) as bar:
        shards = write_shards(store, staging, spool, ordered, config.shard_bytes, progress=bar)
    problems.sort(key=lambda p: (p.video_id or "", p.path))
    if config.on_error == "skip":
        store.write(ERRORS_NAME, dumps({"skipped": [p.to_json() for p in problems]}))
    manifest = _manifest(scan.views, results, shards, config, skipped=len(problems), schema=scan.keypoint_schema)
    store.write(INDEX_NAME, dumps(manifest.to_json()))  # last: its presence means "complete"
    shutil.rmtree(work)
    chunks = sum(len(r.chunks) for r in results)
    max_frames = config.max_video_frames or "all"
    log.info("Video chunking enabled: %d videos -> %d chunks (max %s frames/chunk)", len(results), chunks, max_frames)
    if problems:
        log.warning("skipped %d video(s), listed in %s:", len(problems), os.path.join(output, ERRORS_NAME))
        for p in problems:
            log.warning("  %s", p)
    return WriteReport(videos=len(results), chunks=chunks, shards=len(shards), skipped=problems, resumed=resumed)


def _fail(problems: list) -> None:
    raise WriterError("source problems, nothing written:\n" + "\n".join(f"  {p}" for p in problems))


def _claim_output(store, output: str, work: str, config: WriteConfig) -> None:
    """Start a new run, or continue one with the same configuration; refuse anything else."""
    job_path = os.path.join(work, "job.json")
    wanted = dumps({"output": output, **config.to_json()})
    if os.path.exists(job_path):
        with open(job_path, "rb") as f:
            if f.read() != wanted:
                raise WriterError(
                    f"{output} holds an unfinished run with other settings ({job_path}); "
                    "re-run with the same settings to resume it, or write into a new OUTPUT"
                )
        return
    if store.listing():
        raise WriterError(f"{output} is not empty and holds no vidshard run to resume: write into a new OUTPUT")
    os.makedirs(work, exist_ok=True)
    with open(job_path + ".partial", "wb") as f:
        f.write(wanted)
    os.replace(job_path + ".partial", job_path)


def _already_written(store, work: str, config: WriteConfig) -> WriteReport:
    index = json.loads(store.read(INDEX_NAME))
    if index.get("config") != config.to_json():
        raise WriterError("OUTPUT's index.json describes a dataset written with other settings: write into a new OUTPUT")
    shutil.rmtree(work, ignore_errors=True)  # a kill between index.json and clean-up
    log.info("OUTPUT is complete already; nothing to do")
    totals = index["totals"]
    return WriteReport(videos=totals["videos"], chunks=totals["chunks"], shards=totals["shards"], skipped=[], resumed=totals["videos"])


def _manifest(views, results: list[VideoResult], shards, config: WriteConfig, skipped: int, schema) -> Manifest:
    # Every video's own rate is in its meta.json; the manifest states it when there is one.
    rates = {r.fps for r in results}
    return Manifest(
        views=list(views),
        fps=float(Fraction(rates.pop())) if len(rates) == 1 else None,
        max_video_frames=config.max_video_frames,
        overlap=config.overlap,
        labels=sorted({label for r in results for label in r.labels}),
        totals={
            "videos": len(results),
            "chunks": sum(len(r.chunks) for r in results),
            "segments": sum(r.nsegments for r in results),
            "chunk_segments": sum(s.nsegments for s in shards),
            "frames": sum(r.num_frames for r in results),
            "chunk_frames": sum(s.nframes for s in shards),
            "shards": len(shards),
            "bytes": sum(s.filesize for s in shards),
        },
        encoder=config.encode.describe(),
        skipped=skipped,
        shards=shards,
        keypoints={name: {"shape": list(shape), "dtype": dt} for name, (shape, dt) in sorted(schema.items())},
        config=config.to_json(),
    )
