"""The write job's driver: it plans and schedules, it does not move media.

    list SOURCE (names only) -> probe tasks -> plan (saved) -> encode tasks and shard
    tasks, streamed (schedule.py) -> errors.json -> index.json

Every task runs on the engine (a local process pool or Ray: engine.py) and reads or writes
the stores itself; the driver handles metadata only (names, frame counts, sizes, hashes),
and reports its own I/O. OUTPUT's life cycle:

    WORK/job.json                 the settings of the run in progress (WORK: OUTPUT/.vidshard-work/
    WORK/plan.json                or --work-dir/vidshard-work-<hash of OUTPUT>/, a prefix for object
    WORK/runs/<id>.<c>-<d>.json   stores); the plan (the sample order), saved before the
    WORK/spool/<key>.tar          first shard; finished encode tasks (runs of chunks [c, d) of a video: their samples' sizes);
    WORK/shards/<shard>.json      spooled samples; published shards' entries
    OUTPUT/shard-NNNNNN.tar       complete shards, published atomically
    OUTPUT/errors.json            skipped videos (--on-error skip)
    OUTPUT/index.json             written last: its presence means "complete"
"""

from __future__ import annotations

import dataclasses
import errno
import json
import logging
import re
from collections.abc import Callable
from fractions import Fraction

from tqdm import tqdm

from streaming.format import ERRORS_NAME, FORMAT_VERSION, INDEX_NAME, Manifest, dumps

from .config import WriteConfig  # noqa: F401  (re-exported: `from shardwriter.job import WriteConfig`)
from .engine import Engine, LocalEngine, run_all
from .errors import SourceError, WriterError
from .fingerprint import check_same_source, source_fingerprint
from .fingerprint import record as record_source
from .lock import OutputLock
from .limits import writable
from .probe import ProbeTask, run_probe_task
from .schedule import make_plan, check_plan, run_plan
from .source import check_source
from .store import MIN_PART_BYTES, PART_BYTES, open_store, work_url, write_json

log = logging.getLogger("vidshard.write")
SHARD_PATTERN = re.compile(r"shard-\d{6,}\.tar")  # assemble.SHARD_NAME


@dataclasses.dataclass(frozen=True, kw_only=True)
class WriteReport:
    videos: int
    chunks: int
    shards: int
    bytes: int  # of the shards
    skipped: list[SourceError]


EngineFactory = Callable[[int], Engine]


def write_dataset(source: str, output: str, config: WriteConfig, workers: int = 1, engine: EngineFactory | None = None,
                  work_dir: str | None = None, on_phase: Callable[[str], None] = lambda phase: None,
                  run_frames: int | None = None) -> WriteReport:
    """Write SOURCE's chunk samples to OUTPUT (a folder, or an object-store URL).

    `engine(workers)` makes the engine (default: a local process pool of `workers`);
    The plan and the spool live in OUTPUT/.vidshard-work, or with work_dir in a folder of
    their own under it (store.work_url). `on_phase("ready")` once the engine is up and both
    stores answered, `on_phase("end")` before the engine's workers exit: where the CLI and the
    bench measure the driver's own I/O (vidshard/bench/driverio.py). `run_frames`: about how
    many frames an encode task takes (None: plan.run_frames, from the dataset's frames and the
    engine's parallelism; 1: one chunk per task). Like `workers`, it never changes the bytes written.
    """
    if run_frames is not None and run_frames < 1:
        raise ValueError(f"--run-frames must be >= 1, got {run_frames}")
    try:
        return _write_dataset(source, output, config, engine or LocalEngine, workers, work_url(output, work_dir), on_phase,
                              run_frames)
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise WriterError(
                f"{output}: no space left on the device ({exc.filename or exc}); nothing partial is listed: "
                "free space and re-run the same command to resume"
            ) from None
        if exc.errno == errno.EFBIG:  # RLIMIT_FSIZE (`ulimit -f`), or the file system's own file-size limit
            raise WriterError(
                f"{output}: a file grew past the file-size limit ({exc.filename or exc}; `ulimit -f` or the file "
                "system's limit); nothing partial is listed: raise the limit and re-run the same command to resume"
            ) from None
        raise


def _write_dataset(source: str, output: str, config: WriteConfig, make_engine: EngineFactory, workers: int,
                   work_at: str, on_phase: Callable[[str], None], run_frames: int | None) -> WriteReport:
    # SOURCE and --views are checked before OUTPUT is claimed, so a corrected command just runs.
    listing = check_source(source, config.views)
    video_ids, views = list(listing.video_ids), tuple(config.views) if config.views else listing.views
    sources = source_fingerprint(source, video_ids)
    store, work = open_store(output), open_store(work_at)
    with OutputLock(store, output):  # before anything of OUTPUT is read: a second writer stops here
        if store.exists(INDEX_NAME):
            check_same_source(store, sources, output, "a finished dataset")
            return _already_written(store, work, config)
        _claim_output(store, work, output, config, sources)
        engine = make_engine(workers)
        try:
            on_phase("ready")  # start-up done: the engine is up, both stores answered
            return _run(engine, source, output, work_at, store, work, config, video_ids, views, sources, run_frames)
        finally:
            # Before the pool's workers exit: Linux adds a reaped child's I/O to its parent's counters.
            on_phase("end")
            engine.close()


def _run(engine: Engine, source: str, output: str, work_at: str, store, work, config: WriteConfig,
         video_ids: list[str], views: tuple[str, ...], sources: dict[str, str], run_frames: int | None = None) -> WriteReport:
    probes, problems = [], []
    tasks = [ProbeTask(source=source, video_id=v, views=views, truncate_views=config.truncate_views, encode=config.encode)
             for v in video_ids]  # (the listing is the driver's; every file is opened by a task)
    with tqdm(total=len(tasks), desc="probe", unit="video", disable=None) as bar:
        for task, outcome in run_all(engine, run_probe_task, tasks):
            bar.update(1)
            if isinstance(outcome, SourceError):
                problems.append(outcome)
            elif isinstance(outcome, BaseException):
                raise outcome
            else:
                probes.append(outcome)
    probes, refused = writable(probes, config, source)
    problems = sorted(problems + refused, key=lambda p: (p.video_id or "", p.path))
    if problems and config.on_error == "raise":
        _discard(store, work, [])
        _fail(problems)
    if not probes:
        _discard(store, work, [])
        _fail(problems or [WriterError("no videos to write")])
    probes.sort(key=lambda p: p.spec.video_id)
    for probe in probes:
        for note in probe.spec.warnings:
            log.warning("%s", note)
    schema, origin = _merge_schemas(probes)
    plan = make_plan(probes, problems, config)
    check_plan(work, plan, output)
    part_bytes = min(PART_BYTES, max(MIN_PART_BYTES, config.shard_bytes // 4))
    with tqdm(total=len(plan.order), desc="published", unit="sample", disable=None) as bar:
        try:
            outcome = run_plan(engine, plan, {p.spec.video_id: p for p in probes}, config, schema, origin,
                               work_at, output, part_bytes, progress=bar, frames=run_frames)
        except SourceError as exc:  # on_error fail: a video failed while encoding
            engine.close()
            _discard(store, work, [n for n in store.listing() if SHARD_PATTERN.fullmatch(n)])
            _fail([exc])
    problems = sorted(problems + outcome.problems, key=lambda p: (p.video_id or "", p.path))
    results = [outcome.results[v] for v in sorted(outcome.results)]
    if config.on_error == "skip":
        store.write(ERRORS_NAME, dumps({"skipped": [p.to_json() for p in problems]}))
    manifest = _manifest(views, results, outcome.shards, config, skipped=len(problems), schema=schema)
    record_source(store, sources)  # what the finished dataset was written from (fingerprint.py)
    write_json(store, INDEX_NAME, manifest.to_json())  # last: its presence means "complete"
    work.delete_tree("")
    store.remove_partials()
    work.remove_partials()  # (a --work-dir outside OUTPUT)
    chunks = sum(len(r.chunks) for r in results)
    max_frames = config.max_video_frames or "all"
    log.info("Video chunking enabled: %d videos -> %d chunks (max %s frames/chunk)", len(results), chunks, max_frames)
    if problems:
        log.warning("skipped %d video(s), listed in %s:", len(problems), ERRORS_NAME)
        for p in problems:
            log.warning("  %s", p)
    return WriteReport(videos=len(results), chunks=chunks, shards=len(outcome.shards),
                       bytes=manifest.totals["bytes"], skipped=problems)


def _merge_schemas(probes) -> tuple[dict, dict]:
    """Per keypoint kind, the schema of the first video (sorted) that has it: what one scan
    over all videos in that order finds (source.keypoint_schema)."""
    schema: dict = {}
    origin: dict[str, str] = {}
    for probe in probes:
        for kind, path in probe.origin.items():
            if kind not in origin:
                origin[kind] = path
                schema.update({n: s for n, s in probe.schema.items() if n.partition(".")[0] == kind})
    return schema, origin


def _fail(problems: list) -> None:
    raise WriterError("source problems, nothing written:\n" + "\n".join(f"  {p}" for p in problems))


def _discard(store, work, shard_names: list[str]) -> None:
    """on_error fail: leave OUTPUT as it was before the run (nothing written)."""
    for name in shard_names:
        store.delete(name)
    store.remove_partials()
    work.delete_tree("")


def _claim_output(store, work, output: str, config: WriteConfig, sources: dict[str, str]) -> None:
    """Start a new run, or continue one with the same configuration and SOURCE; refuse anything else."""
    # The encoder as it will run (libraries, CPU code paths) and the format: a run resumed by
    # another vidshard or FFmpeg build would mix clips of two kinds in one OUTPUT.
    wanted = dumps({"output": output, **config.to_json(), "encoder": config.encode.describe(), "format_version": FORMAT_VERSION})
    if work.exists("job.json"):
        if work.read("job.json") != wanted:
            raise WriterError(
                f"{output} holds an unfinished run with other settings, or begun by another vidshard or FFmpeg build "
                f"({work.url}/job.json); re-run with the same settings and build to resume it, or write into a new OUTPUT"
            )
        check_same_source(work, sources, output, "an unfinished run")
        record_source(work, sources)  # (a run begun by a vidshard from before the record)
        return
    if store.listing():
        raise WriterError(f"{output} is not empty and holds no vidshard run to resume: write into a new OUTPUT")
    # Without job.json nothing in the work area can be checked against these settings (a run
    # killed while it discarded its work leaves records and spooled samples): start empty.
    work.delete_tree("")
    record_source(work, sources)
    work.write("job.json", wanted)


def _already_written(store, work, config: WriteConfig) -> WriteReport:
    index = json.loads(store.read(INDEX_NAME))
    if index.get("config") != config.to_json():
        raise WriterError("OUTPUT's index.json describes a dataset written with other settings: write into a new OUTPUT")
    work.delete_tree("")  # a kill between index.json and clean-up
    store.remove_partials()
    work.remove_partials()
    log.info("OUTPUT is complete already; nothing to do")
    totals = index["totals"]
    return WriteReport(videos=totals["videos"], chunks=totals["chunks"], shards=totals["shards"], bytes=totals["bytes"],
                       skipped=[])


def _manifest(views, results, shards, config: WriteConfig, skipped: int, schema) -> Manifest:
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
