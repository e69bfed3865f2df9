"""VideoShardDataset: a torch IterableDataset over vidshard shards.

Per epoch, each (rank, worker) computes its part of the epoch plan (`plan.py`) from the
manifest alone, then for each window: reads the window's samples (encoded bytes, bounded by
`shuffle_buffer`), and yields its items in the window's permuted order, decoding only the
frames each item needs. Nothing is decoded before it is about to be yielded.
"""

from __future__ import annotations

import collections
import logging
import multiprocessing
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch

from .cache import ShardCache
from .decode import ClipDecoder
from .errors import SampleError
from .format import CLIP_EXT, KPT_EXT, label_ids, video_of
from .items import Options, build_item, item_specs, sample_meta
from .plan import Catalog, EpochOrder, PlanSpec, Progress, Window, plan_items, skip_items, world_windows
from .remote import StorageOptions, download, open_range, redact
from .resume import STATE_KEY, check_same_run, fingerprint
from .sampling import MODES
from .shards import read_run, resolve_source
from .tario import Limits
from .units import parse_bytes
from .world import World

log = logging.getLogger("vidshard.streaming")
_CLIP_STREAM = 3  # RNG stream id of clip-mode window starts


class VideoShardDataset(torch.utils.data.IterableDataset):
    """Chunk samples from vidshard shards; see docs/streaming.md for every option."""

    def __init__(
        self,
        source: str | Sequence[str],
        *,
        sample: str = "chunk",
        num_frames: int | None = None,
        stride: int = 1,
        img_size: tuple[int, int] | None = None,
        views: Sequence[str] | None = None,
        load_rgb: bool = True,
        load_kpt: bool = False,
        shuffle: bool = True,
        seed: int = 0,
        shuffle_buffer: int | str = "256MB",
        shuffle_block: int | str = "4MB",
        drop_last: bool = False,
        on_error: str = "raise",
        transform: Callable[[dict], dict] | None = None,
        decode_threads: int = 1,
        resume_from: dict | None = None,
        videos: Sequence[str] | None = None,
        limits: Limits = Limits(),
        storage: StorageOptions | None = None,
        cache_dir: str | None = None,
        cache_limit: int | str = "50GB",
        verify_cache: bool = False,
    ):
        super().__init__()
        if sample not in MODES:
            raise ValueError(f"sample must be one of {MODES}, got {sample!r}")
        if sample == "clip" and num_frames is None:
            raise ValueError('sample="clip" needs num_frames')
        if on_error not in ("raise", "skip"):
            raise ValueError(f'on_error must be "raise" or "skip", got {on_error!r}')
        if not (load_rgb or load_kpt):
            raise ValueError("nothing to load: set load_rgb and/or load_kpt")
        self.storage = storage or StorageOptions()
        self.manifest, self.urls = resolve_source(source, self.storage)
        self.cache = ShardCache(cache_dir, parse_bytes(cache_limit), verify_cache) if cache_dir else None
        views = tuple(views) if views is not None else tuple(self.manifest.views)
        unknown = [v for v in views if v not in self.manifest.views]
        if unknown or not views:
            raise ValueError(f"views {unknown or list(views)} not in the dataset's views {self.manifest.views}")
        if load_kpt and not self.manifest.keypoints:
            raise ValueError("load_kpt=True, but the dataset was written without keypoints")
        self.options = Options(
            mode=sample,
            num_frames=num_frames,
            stride=stride,
            img_size=tuple(img_size) if img_size else None,
            views=views,
            load_rgb=load_rgb,
            load_kpt=load_kpt,
            label_ids=label_ids(self.manifest.labels),
            limits=limits,
        )
        self.shuffle, self.seed, self.drop_last = shuffle, seed, drop_last
        self.buffer_bytes = parse_bytes(shuffle_buffer)
        self.block_bytes = None if shuffle_block == "shard" else max(1, parse_bytes(shuffle_block))
        self.on_error, self.transform, self.decode_threads = on_error, transform, decode_threads
        self.limits = limits
        # A video subset (e.g. a train/val split by video) keeps the catalog's shape: samples
        # of other videos count zero items, so epoch lengths stay exact.
        wanted = set(videos) if videos is not None else None
        per_sample = (lambda s: s.nsegments) if sample == "segment" else (lambda s: 1)

        def items(s) -> int:
            return per_sample(s) if wanted is None or video_of(s.key) in wanted else 0

        self.catalog = Catalog(
            sample_items=[np.array([items(s) for s in sh.samples], dtype=np.int64) for sh in self.manifest.shards],
            sample_bytes=[np.array([s.size for s in sh.samples], dtype=np.int64) for sh in self.manifest.shards],
        )
        dataset_bytes = sum(sh.filesize for sh in self.manifest.shards)
        if self.cache is not None and self.block_bytes is not None and self.cache.limit < dataset_bytes:
            # Blocks come from every shard: a cache that cannot hold them all downloads whole shards for a few MB each.
            log.warning("cache_limit (%d bytes) is below the dataset's %d bytes: with shuffle_block every window reads "
                        "a few MB from many shards and the cache downloads each of them whole; use a cache that holds "
                        "the dataset, no cache_dir, or shuffle_block='shard' (docs/streaming.md)", self.cache.limit, dataset_bytes)
        self.fingerprint = fingerprint(self.manifest, sample=sample, num_frames=num_frames, stride=stride, videos=videos)
        # Shared with DataLoader workers (inherited at their start), so set_epoch() in the
        # main process reaches persistent workers too.
        self._epoch = multiprocessing.RawValue("q", 0)
        self.stats: collections.Counter = collections.Counter()
        # Resume: a merged global progress (any world shape), applied to its own epoch ...
        self._resume_from = Progress.from_json(resume_from) if resume_from else None
        if self._resume_from is not None:
            check_same_run(self._resume_from.spec, self.spec(World()))
            self.set_epoch(self._resume_from.spec.epoch)
        # ... or one partition's own state from StatefulDataLoader, applied to the next epoch started.
        self._pending: dict | None = None
        self._state: dict | None = None  # the running epoch: plan spec, partition, items yielded

    # -- epoch -------------------------------------------------------------------------
    def set_epoch(self, epoch: int) -> None:
        self._epoch.value = epoch

    @property
    def epoch(self) -> int:
        return self._epoch.value

    def spec(self, world: World) -> PlanSpec:
        """The plan of the current epoch for this world shape."""
        base = self._resume_from if self._resume_from and self._resume_from.spec.epoch == self.epoch else None
        return PlanSpec(epoch=self.epoch, seed=self.seed, shuffle=self.shuffle, drop_last=self.drop_last,
                        buffer_bytes=self.buffer_bytes, world_size=world.world_size, num_workers=world.num_workers,
                        block_bytes=self.block_bytes, fingerprint=self.fingerprint, base=base)

    def __len__(self) -> int:
        """Items this rank yields this epoch (every rank yields the same number)."""
        return plan_items(self.catalog, self.spec(World.detect()))

    # -- resume (torchdata StatefulDataLoader calls these in each worker) ---------------
    def state_dict(self) -> dict[str, Any]:
        return {STATE_KEY: 1, **(self._state or {"spec": None})}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get(STATE_KEY) != 1:
            raise ValueError("not a VideoShardDataset state")
        self._pending = state if state.get("spec") else None

    def _start(self, world: World) -> tuple[PlanSpec, int, int]:
        """This epoch's plan, how many of this partition's items were consumed already, and
        how many skipped items it still owes a substitute for."""
        pending, self._pending = self._pending, None
        if pending is None:
            return self.spec(world), 0, 0
        spec = PlanSpec.from_json(pending["spec"])
        check_same_run(spec, self.spec(world))
        if spec.epoch != self.epoch:  # saved at the end of an earlier epoch: start this one afresh
            return self.spec(world), 0, 0
        if (spec.world_size, spec.num_workers, pending["rank"], pending["worker"]) != (
            world.world_size, world.num_workers, world.rank, world.worker
        ):
            raise ValueError(
                f"this state was saved by rank {pending['rank']}/{spec.world_size}, worker "
                f"{pending['worker']}/{spec.num_workers}, not rank {world.rank}/{world.world_size}, worker "
                f"{world.worker}/{world.num_workers}: to resume on another shape, merge every rank's loader "
                "state with streaming.resume.merge_loader_states() and pass it as resume_from="
            )
        return spec, int(pending["yielded"]), int(pending.get("owed", 0))

    # -- iteration ---------------------------------------------------------------------
    def __iter__(self) -> Iterator[dict[str, Any]]:
        world = World.detect()
        spec, delivered, owed = self._start(world)
        order, windows = world_windows(self.catalog, spec, world)
        per_worker = plan_items(self.catalog, spec) // world.num_workers
        if per_worker == 0 and spec.base is None:  # a resumed epoch's last few items may leave workers idle
            raise ValueError(
                f"rank {world.rank} has fewer items than its {world.num_workers} DataLoader workers "
                f"({plan_items(self.catalog, spec)} items): use fewer workers, or a larger dataset"
            )
        self._state = {"spec": spec.to_json(), "rank": world.rank, "worker": world.worker, "yielded": delivered, "owed": owed}
        decoder = ClipDecoder(threads=self.decode_threads)
        last_good = None  # (sample, sub, shard, index): encoded bytes of the last delivered item
        for window in skip_items(windows, delivered):
            samples = self._read_window(window, order)
            for position, padded in zip(window.positions.tolist(), window.padded.tolist()):
                shard, index, sub = int(order.shard[position]), int(order.sample[position]), int(order.sub[position])
                self._state["yielded"] += 1  # counted when consumed: delivered or skipped
                try:
                    item = self._item(samples[shard, index], sub, shard, index, spec.epoch, decoder)
                except SampleError as exc:
                    if self.on_error == "raise":
                        raise
                    self.stats[f"skipped_{exc.reason}"] += 1
                    log.warning("skipping item: %s", exc)
                    self._state["owed"] += 1
                    continue
                item["meta"]["padded"] = padded
                self.stats["items"] += 1
                yield self.transform(item) if self.transform else item
                del item  # hold no decoded item while building the next one
                last_good = (samples[shard, index], sub, shard, index)
                yield from self._substitutes(last_good, spec.epoch, decoder)
        if self._state["owed"]:
            if last_good is None:
                raise SampleError(f"every item of rank {world.rank}, worker {world.worker} failed: nothing to pad with",
                                  shard=redact(self.urls[0]))
            yield from self._substitutes(last_good, spec.epoch, decoder)

    def _substitutes(self, good: tuple, epoch: int, decoder: ClipDecoder) -> Iterator[dict[str, Any]]:
        """Repeat a good item for each skipped one, so this rank still yields len(ds) items
        (a short rank would leave the others waiting in their next collective)."""
        while self._state["owed"]:
            self._state["owed"] -= 1
            item = self._item(*good, epoch, decoder)
            item["meta"]["padded"] = True
            self.stats["substituted"] += 1
            yield self.transform(item) if self.transform else item

    def _read_window(self, window: Window, order: EpochOrder) -> dict[tuple[int, int], dict]:
        """The window's samples, read in runs of consecutive samples per shard."""
        rgb, kpt = self.options.load_rgb, self.options.load_kpt

        def want(suffix: str) -> bool:
            return not (suffix.endswith(f".{CLIP_EXT}") and not rgb or suffix.endswith(f".{KPT_EXT}") and not kpt)

        samples: dict[tuple[int, int], dict] = {}
        pairs = window.samples(order)
        i = 0
        while i < len(pairs):
            shard, first = pairs[i]
            j = i + 1
            while j < len(pairs) and pairs[j] == (shard, first + (j - i)):
                j += 1
            entries = self.manifest.shards[shard].samples[first : first + (j - i)]
            length = sum(e.size for e in entries)
            keys = [e.key for e in entries]
            stream = self._open(shard, entries[0].offset, length)
            for k, sample in enumerate(read_run(stream, redact(self.urls[shard]), keys, want, self.limits)):
                samples[shard, first + k] = sample
                self.stats["bytes_read"] += sum(len(v) for name, v in sample.items() if not name.startswith("__"))
            i = j
        return samples

    def _open(self, shard: int, offset: int, length: int):
        """A stream over [offset, offset + length) of a shard: from the local cache when one
        is configured (downloading the whole shard once), else straight from its URL."""
        url, entry = self.urls[shard], self.manifest.shards[shard]
        if self.cache is not None:
            local = self.cache.get(entry.sha256, entry.filesize,
                                   lambda path: download(url, entry.filesize, path, self.storage, self.stats), self.stats)
            if local is not None:
                return open_range(local, offset, length, self.storage, self.stats)
        return open_range(url, offset, length, self.storage, self.stats)

    def _item(self, sample: dict, sub: int, shard: int, index: int, epoch: int, decoder: ClipDecoder) -> dict:
        url = redact(self.urls[shard])
        if "__parsed__" not in sample:  # once per sample: segment mode builds several items from it
            meta, timeline = sample_meta(sample, url)
            rng = np.random.default_rng([self.seed, epoch, _CLIP_STREAM, shard, index])
            sample["__parsed__"] = meta, timeline, item_specs(meta, timeline, self.options, rng)
        meta, timeline, specs = sample["__parsed__"]
        if sub >= len(specs):
            raise SampleError(f"index.json lists more items than the sample has ({len(specs)})", shard=url, key=sample["__key__"])
        return build_item(sample, meta, timeline, specs[sub], self.options, decoder, url)
