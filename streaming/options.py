"""What both datasets share before the first item: the arguments checked, the manifest and
its shard URLs, the per-item `Options`, each sample's item count, the sample reader and the
clip-window seed. `VideoShardDataset` (streaming) and `VideoShardMapDataset` (random access)
both build themselves from `open_source`, so the same arguments mean the same items in both.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Sequence

import numpy as np

from .cache import ShardCache
from .format import KPT_EXT, META, TIMELINE, Manifest, clip_suffix, kpt_suffix, label_ids, npz_bound, video_of
from .items import Options
from .reading import SampleReader
from .remote import StorageOptions
from .sampling import MODES
from .shards import resolve_source
from .tario import Limits
from .units import parse_bytes

_CLIP_STREAM = 3  # RNG stream id of clip-mode window starts


@dataclasses.dataclass(frozen=True, kw_only=True)
class Source:
    """A dataset's shards and settings, as both dataset classes hold them."""

    manifest: Manifest
    urls: list[str]  # absolute shard URLs, in the manifest's shard order
    storage: StorageOptions
    cache: ShardCache | None
    options: Options


def open_source(
    source: str | Sequence[str], *, sample: str, num_frames: int | None, stride: int, img_size: tuple[int, int] | None,
    views: Sequence[str] | None, load_rgb: bool, load_kpt: bool, limits: Limits, storage: StorageOptions | None,
    cache_dir: str | None, cache_limit: int | str, verify_cache: bool,
) -> Source:
    """Check the arguments (ValueError showing the values), load index.json and bound its counts."""
    if sample not in MODES:
        raise ValueError(f"sample must be one of {MODES}, got {sample!r}")
    if sample == "clip" and num_frames is None:
        raise ValueError('sample="clip" needs num_frames')
    if not (load_rgb or load_kpt):
        raise ValueError("nothing to load: set load_rgb and/or load_kpt")
    storage = storage or StorageOptions()
    manifest, urls = resolve_source(source, storage, limits)
    check_counts(manifest, limits)
    cache = ShardCache(cache_dir, parse_bytes(cache_limit), verify_cache) if cache_dir else None
    views = tuple(views) if views is not None else tuple(manifest.views)
    unknown = [v for v in views if v not in manifest.views]
    if unknown or not views:
        raise ValueError(f"views {unknown or list(views)} not in the dataset's views {manifest.views}")
    if load_kpt and not manifest.keypoints:
        raise ValueError("load_kpt=True, but the dataset was written without keypoints")
    options = Options(
        mode=sample,
        num_frames=num_frames,
        stride=stride,
        img_size=tuple(img_size) if img_size else None,
        views=views,
        load_rgb=load_rgb,
        load_kpt=load_kpt,
        label_ids=label_ids(manifest.labels),
        limits=limits,
        keypoint_schema=manifest.keypoints,
        chunking=(manifest.max_video_frames, manifest.overlap),
    )
    return Source(manifest=manifest, urls=urls, storage=storage, cache=cache, options=options)


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
        raise ValueError(f"index.json lists {total} items for an epoch, over the limit of {limits.max_epoch_items} "
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
                raise ValueError(f"index.json lists {s.nframes} frames / {s.nsegments} segments for sample {s.key!r} of "
                                 f"{shard.url!r}, over the limits of {limits.max_chunk_frames} / {limits.max_segments} "
                                 "(streaming.tario.Limits)")
