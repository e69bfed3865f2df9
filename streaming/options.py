"""What the datasets take, and what both build from it before the first item.

`ReadOptions` holds every setting both datasets share, with the one set of defaults the CLI,
tools, bench and training example read too; `StreamOptions` and `MapOptions` add what only
one of them takes. From a `ReadOptions`, `open_source` checks the values, loads the manifest
and its shard URLs and makes the per-item `Options`; then each sample's item count, the
sample reader and the clip-window seed. `VideoShardDataset` (streaming), `VideoShardMapDataset`
(random access) and `wds_items` build themselves from `open_source`, so the same options mean
the same items in all three.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .cache import ShardCache
from .errors import DatasetNotFound, DatasetRefused
from .format import KPT_EXT, META, TIMELINE, Manifest, clip_suffix, kpt_suffix, label_ids, npz_bound, video_of
from .handles import OPEN_SHARDS
from .items import Options
from .reading import SampleReader
from .remote import StorageOptions
from .sampling import MODES
from .shards import resolve_source
from .tario import Limits
from .units import parse_bytes

_CLIP_STREAM = 3  # RNG stream id of clip-mode window starts


@dataclasses.dataclass(frozen=True, kw_only=True)
class ReadOptions:
    """The settings both datasets take (docs/streaming.md explains each), defaults included:
    these are the only reader defaults; the CLI and the training example read them here."""

    sample: str = "chunk"  # "chunk", "segment" or "clip" (sampling.MODES)
    num_frames: int | None = None
    stride: int = 1
    img_size: tuple[int, int] | None = None
    views: Sequence[str] | None = None  # None: every view of the dataset
    load_rgb: bool = True
    load_kpt: bool = False
    seed: int = 0
    transform: Callable[[dict], dict] | None = None
    decode_threads: int = 1
    videos: Sequence[str] | None = None  # None: every video
    limits: Limits = dataclasses.field(default_factory=Limits)
    storage: StorageOptions | None = None
    cache_dir: str | None = None
    cache_limit: int | str = "50GB"
    verify_cache: bool = True

    @classmethod
    def given(cls, owner: str, options: Any, settings: dict[str, Any]):
        """A dataset's options: `options` (None: the defaults), which must be this class (a
        TypeError naming the class expected otherwise: another options class, or a setting
        given by position), with `settings` in place."""
        if options is None:
            options = cls()
        elif not isinstance(options, cls):
            raise TypeError(f"{owner}'s second argument must be a {cls.__name__} (settings go as keywords, e.g. "
                            f"sample=\"segment\"), got {type(options).__name__} {repr(options)[:80]}")
        return options.replace(owner, settings)

    def replace(self, owner: str, settings: dict[str, Any]):
        """These options with `settings` (a dataset's keyword arguments) in place; a TypeError
        naming `owner` for a setting it does not take."""
        fields = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(settings) - fields)
        if unknown:
            raise TypeError(f"{owner} got unexpected keyword argument(s) {unknown}")
        return dataclasses.replace(self, **settings)


@dataclasses.dataclass(frozen=True, kw_only=True)
class StreamOptions(ReadOptions):
    """`VideoShardDataset`'s: the shared settings, and the epoch plan's."""

    shuffle: bool = True
    shuffle_buffer: int | str = "256MB"
    shuffle_block: int | str = "auto"
    drop_last: bool = False
    on_error: str = "raise"  # or "skip"

    def __post_init__(self):
        if self.on_error not in ("raise", "skip"):
            raise DatasetRefused(f'on_error must be "raise" or "skip", got {self.on_error!r}')


@dataclasses.dataclass(frozen=True, kw_only=True)
class MapOptions(ReadOptions):
    """`VideoShardMapDataset`'s: the shared settings, and the open files kept per thread."""

    open_shards: int = OPEN_SHARDS


@dataclasses.dataclass(frozen=True, kw_only=True)
class Source:
    """A dataset's shards and settings, as both dataset classes hold them."""

    manifest: Manifest
    urls: list[str]  # absolute shard URLs, in the manifest's shard order
    storage: StorageOptions
    cache: ShardCache | None
    options: Options


def option_bytes(name: str, value: int | str) -> int:
    """A byte-count option (an int, or "256MB", "1GiB"): DatasetRefused naming the option if it is not one."""
    try:
        return parse_bytes(value)
    except (ValueError, TypeError) as exc:
        raise DatasetRefused(f"{name}: {exc}") from None


def open_source(source: str | Sequence[str], opts: ReadOptions) -> Source:
    """Check the options (ValueError showing the values), load index.json and bound its counts."""
    sample, num_frames, views, limits = opts.sample, opts.num_frames, opts.views, opts.limits
    if sample not in MODES:
        raise DatasetRefused(f"sample must be one of {MODES}, got {sample!r}")
    if sample == "clip" and num_frames is None:
        raise DatasetRefused('sample="clip" needs num_frames')
    if not (opts.load_rgb or opts.load_kpt):
        raise DatasetRefused("nothing to load: set load_rgb and/or load_kpt")
    storage = opts.storage or StorageOptions()
    manifest, urls = load_index(source, storage, limits)
    check_counts(manifest, limits)
    cache = ShardCache(opts.cache_dir, option_bytes("cache_limit", opts.cache_limit), opts.verify_cache) if opts.cache_dir else None
    views = tuple(views) if views is not None else tuple(manifest.views)
    unknown = [v for v in views if v not in manifest.views]
    if unknown or not views:
        raise DatasetRefused(f"views {unknown or list(views)} not in the dataset's views {manifest.views}")
    if opts.load_kpt and not manifest.keypoints:
        raise DatasetRefused("load_kpt=True, but the dataset was written without keypoints")
    options = Options(
        mode=sample,
        num_frames=num_frames,
        stride=opts.stride,
        img_size=tuple(opts.img_size) if opts.img_size else None,
        views=views,
        load_rgb=opts.load_rgb,
        load_kpt=opts.load_kpt,
        label_ids=label_ids(manifest.labels),
        limits=limits,
        keypoint_schema=manifest.keypoints,
        chunking=(manifest.max_video_frames, manifest.overlap),
    )
    return Source(manifest=manifest, urls=urls, storage=storage, cache=cache, options=options)


def load_index(source: str | Sequence[str], storage: StorageOptions | None = None,
               limits: Limits = Limits()) -> tuple[Manifest, list[str]]:
    """index.json and the shard URLs (`shards.resolve_source`), its refusals typed: no index.json
    is a DatasetNotFound, an index.json or shard list refused a DatasetRefused (the message
    names it). Every ValueError of the load is a deliberate refusal of the input."""
    try:
        return resolve_source(source, storage or StorageOptions(), limits)
    except FileNotFoundError as exc:
        raise DatasetNotFound(str(exc)) from None
    except ValueError as exc:
        raise DatasetRefused(str(exc)) from None


def sample_items(manifest: Manifest, mode: str, videos: Sequence[str] | None, limits: Limits) -> list[np.ndarray]:
    """Per shard, the items of each sample: 1 (chunk, clip) or its segments (segment mode);
    0 for samples of videos outside `videos` (a subset keeps the catalog's shape, so epoch
    lengths stay exact). Their sum is bounded by `limits.max_epoch_items`: it sizes the epoch
    plan's and the map index's arrays (2 MB of index.json can ask for 15 GiB)."""
    wanted = set(videos) if videos is not None else None
    per_sample = (lambda s: s.nsegments) if mode == "segment" else (lambda s: 1)

    def items(s) -> int:
        return per_sample(s) if wanted is None or video_of(s.key) in wanted else 0

    counts = [np.array([items(s) for s in sh.samples], dtype=np.int64) for sh in manifest.shards]
    total = sum(int(a.sum()) for a in counts)
    if total > limits.max_epoch_items:
        raise DatasetRefused(f"index.json lists {total} items for an epoch, over the limit of {limits.max_epoch_items} "
                         "(streaming.tario.Limits.max_epoch_items)")
    return counts


def wanted_members(opts: Options) -> set[str]:
    """The member suffixes items of these options read: the JSON members, and the clips and
    keypoints of the selected views only."""
    return {META, TIMELINE} | {clip_suffix(v) for v in opts.views if opts.load_rgb} | \
        {kpt_suffix(v) for v in opts.views if opts.load_kpt}


def member_limit(src, entry, suffix: str) -> int | None:
    """A member's byte limit tighter than its kind's (tario.check_member): a kpt.npz holds what
    the schema says, for its sample's frames."""
    schema = src.manifest.keypoints
    return min(npz_bound(schema, entry.nframes), src.options.limits.max_member_bytes) if suffix.endswith(KPT_EXT) and schema else None


def sample_reader(src, stats: Counter, cls: type[SampleReader] = SampleReader, **extra) -> SampleReader:
    """The reader of the members `src.options` need (those of the selected views only). `src`:
    a `Source` or a dataset (the `manifest`, `urls`, `storage`, `cache`, `options` it holds now)."""
    wanted = wanted_members(src.options)
    return cls(manifest=src.manifest, urls=src.urls, storage=src.storage, cache=src.cache, limits=src.options.limits,
               want=wanted.__contains__, member_limit=lambda entry, suffix: member_limit(src, entry, suffix), stats=stats,
               **extra)


def clip_rng(seed: int, epoch: int, key: str) -> np.random.Generator:
    """The generator of a sample's clip-mode window, from its key: the same window in both
    datasets and in `wds_items` for a given (seed, epoch), whatever subset of shards (and so
    shard numbering) each was given."""
    return np.random.default_rng([seed, epoch, _CLIP_STREAM, *key.encode()])


def check_counts(manifest: Manifest, limits: Limits) -> None:
    """index.json's counts size the epoch plan's arrays: bounded before any is built."""
    for shard in manifest.shards:
        for s in shard.samples:
            if s.nframes > limits.max_chunk_frames or s.nsegments > limits.max_segments:
                raise DatasetRefused(f"index.json lists {s.nframes} frames / {s.nsegments} segments for sample {s.key!r} of "
                                 f"{shard.url!r}, over the limits of {limits.max_chunk_frames} / {limits.max_segments} "
                                 "(streaming.tario.Limits)")
