"""VideoShardDataset: a torch IterableDataset over vidshard shards.

Per epoch, each (rank, worker) computes its part of the epoch plan (`plan.py`) from the
manifest alone, then for each window: lets the previous window go, reads the window's
samples (encoded bytes, bounded by `shuffle_buffer`; `reading.py`), and yields its items in
the window's permuted order, decoding only the frames each item needs. Nothing is decoded
before it is about to be yielded. Every failure, reading included, is one item's: the
`on_error` policy decides, and `ledger.py` keeps the partition's count (skips are replaced,
so every rank yields len(ds) items) as its resume state.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from typing import Any

import torch

from .core import DatasetCore, retried
from .decode import ClipDecoder
from .errors import DatasetRefused, ResumeError, SampleError
from .items import SampleInfo
from .ledger import Ledger, NothingToPad, Planned, deliver
from .options import StreamOptions, option_bytes, sample_reader
from .order import blocks
from .plan import Catalog, EpochOrder, PlanSpec, Progress, Window, epoch_plan, plan_items, skip_items
from .pool import for_the_queue
from .reading import SampleReader
from .remote import redact
from .resume import STATE_KEY, check_same_run, fingerprint
from .world import World

log = logging.getLogger("vidshard.streaming")


class VideoShardDataset(DatasetCore, torch.utils.data.IterableDataset):
    """Chunk samples from vidshard shards; see docs/streaming.md for every option.

    `VideoShardDataset(source, sample="segment", shuffle=False)`: the settings are those of
    `StreamOptions` (options.py), given as keywords, as a `StreamOptions` value, or both (the
    keywords replace the value's)."""

    def __init__(self, source: str | Sequence[str], options: StreamOptions | None = None, *,
                 resume_from: dict | None = None, **settings: Any):
        opts = StreamOptions.given("VideoShardDataset", options, settings)
        torch.utils.data.IterableDataset.__init__(self)
        DatasetCore.__init__(self, source, opts)
        self.shuffle, self.drop_last, self.on_error = opts.shuffle, opts.drop_last, opts.on_error
        self.buffer_bytes = option_bytes("shuffle_buffer", opts.shuffle_buffer)
        self.block_bytes = shuffle_block_bytes(opts.shuffle_block, self.buffer_bytes, self.storage.block_bytes)
        if _blocks_split_shards(self.catalog, self.block_bytes):
            # Every window reads a block or two from each of many shards, and every epoch reaches every shard: a
            # whole-shard cache smaller than the dataset keeps evicting shards it needs again and downloads a whole
            # shard for each few-MB block (measured: twice the dataset per epoch at half its size; shard / block
            # times the bytes read as shards grow). Reading those blocks by range costs what the epoch needs.
            self._cache_short(sum(sh.filesize for sh in self.manifest.shards),
                              f"of the dataset: with shuffle_block={self.block_bytes} a cache that cannot hold every shard "
                              "would download whole shards for a few blocks each, every epoch",
                              ", or shuffle_block='shard' (also what a server that ignores Range requests needs)")
        self.fingerprint = fingerprint(self.manifest, sample=opts.sample, num_frames=opts.num_frames, stride=opts.stride,
                                       videos=opts.videos)
        # Resume: a merged global progress (any world shape), applied to its own epoch ...
        self._resume_from = Progress.from_json(resume_from) if resume_from else None
        if self._resume_from is not None:
            check_same_run(self._resume_from.spec, self.spec(World()))
            self.set_epoch(self._resume_from.spec.epoch)
        # ... or one partition's own state from StatefulDataLoader, applied to the next epoch started.
        self._pending: dict | None = None
        self._running: tuple[dict, World] | None = None  # the running epoch's plan spec (JSON) and partition
        self._ledger = Ledger()  # ... and where the partition stands in it

    # -- the plan ----------------------------------------------------------------------
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
        # "frames": this process's decode cost so far (what a DataLoader worker's ds.stats holds,
        # which the main process cannot see): read, never restored.
        frames = {"decoded": self.stats["frames_decoded"], "delivered": self.stats["frames_delivered"]}
        if self._running is None:
            return {STATE_KEY: 1, "spec": None, "frames": frames}
        spec, world = self._running
        return {STATE_KEY: 1, "spec": spec, "rank": world.rank, "worker": world.worker, **self._ledger.to_state(), "frames": frames}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get(STATE_KEY) != 1:
            raise ResumeError("not a VideoShardDataset state")
        self._pending = state if state.get("spec") else None

    def _start(self, world: World) -> tuple[PlanSpec, Ledger]:
        """This epoch's plan and where this partition stands in it."""
        pending, self._pending = self._pending, None
        if pending is None:
            return self.spec(world), Ledger()
        spec = PlanSpec.from_json(pending["spec"])
        if spec.epoch != self.epoch:  # saved at the end of an earlier epoch: start this one afresh
            return self.spec(world), Ledger()
        check_same_run(spec, self.spec(world))
        missing = [k for k in ("rank", "worker") if k not in pending]
        if missing:
            raise ResumeError(f"a loader state without {', '.join(missing)}: not one a VideoShardDataset saved whole")
        if (spec.world_size, spec.num_workers, pending["rank"], pending["worker"]) != (
            world.world_size, world.num_workers, world.rank, world.worker
        ):
            raise ResumeError(
                f"this state was saved by rank {pending['rank']}/{spec.world_size}, worker "
                f"{pending['worker']}/{spec.num_workers}, not rank {world.rank}/{world.world_size}, worker "
                f"{world.worker}/{world.num_workers}: to resume on another shape, merge every rank's loader "
                "state with streaming.resume.merge_loader_states() and pass it as resume_from="
            )
        return spec, Ledger.from_state(pending)

    # -- iteration ---------------------------------------------------------------------
    def __iter__(self) -> Iterator[dict[str, Any]]:
        world = World.detect()
        spec, ledger = self._start(world)
        plan = epoch_plan(self.catalog, spec)  # once: a resumed plan resolves every level below it
        if plan.items_per_rank // world.num_workers == 0 and spec.base is None:
            # (a resumed epoch's last few items may leave workers idle: allowed there)
            raise DatasetRefused(
                f"rank {world.rank} has fewer items than its {world.num_workers} DataLoader workers "
                f"({plan.items_per_rank} items): use fewer workers, or a larger dataset"
            )
        order, windows = plan.order, plan.windows(world.rank, world.worker)
        self._running, self._ledger = (spec.to_json(), world), ledger
        held = _Held(self._reader(), order)
        decoder = self._decoder()
        logged: set[tuple] = set()

        def on_skip(exc: SampleError) -> None:
            if self.on_error == "raise":
                raise exc
            self.stats[f"skipped_{exc.reason}"] += 1
            if (exc.shard, exc.key, exc.reason) not in logged:  # once per sample, not per segment item
                logged.add((exc.shard, exc.key, exc.reason))
                log.warning("skipping %s item(s) (%s): %s", exc.key or "the", exc.reason, exc)

        def build(position: int) -> dict[str, Any]:
            return self._item(held, position, spec.epoch, decoder)

        try:
            for delivery in deliver(held.planned(skip_items(windows, ledger.consumed)), build, ledger, on_skip):
                self._ledger = delivery.ledger
                item = delivery.item
                item["meta"]["padded"] = delivery.padded
                self.stats["items"] += 1
                self.stats["substituted"] += delivery.substitute
                del delivery
                yield for_the_queue(self.transform(item) if self.transform else item)
                del item  # hold no decoded item while building the next one
        except NothingToPad as exc:
            raise SampleError(f"rank {world.rank}, worker {world.worker}: {exc}", shard=redact(self.urls[0])) from None

    def _reader(self) -> SampleReader:
        return sample_reader(self, self.stats)

    def _item(self, held: _Held, position: int, epoch: int, decoder: ClipDecoder) -> dict:
        shard, index, sub = held.coordinates(position)

        def build() -> dict:
            sample, info = held.get(shard, index, lambda s: self._parse(s, shard, index, epoch))
            return self._decode(sample, info, shard, sub, decoder)

        return retried(held.reader, shard, build, forget=lambda: held.forget(shard))


class _Held:
    """The samples of the window being yielded (bytes and parsed metadata, or their errors):
    one window at a time, released before the next is read."""

    def __init__(self, reader: SampleReader, order: EpochOrder):
        self.reader, self.order = reader, order
        self.samples: dict[tuple[int, int], dict | SampleError] = {}
        self.infos: dict[tuple[int, int], SampleInfo | SampleError] = {}

    def planned(self, windows: list[Window]) -> Iterator[Planned]:
        for window in windows:
            self.samples, self.infos = {}, {}  # window k is let go before window k+1 is read
            self.samples = self.reader.read(window.samples(self.order))
            for position, padded in zip(window.positions.tolist(), window.padded.tolist()):
                yield Planned(position=position, padded=padded)
        self.samples, self.infos = {}, {}

    def forget(self, shard: int) -> None:
        """Let go of the shard's samples (and their errors): each is read again when asked for."""
        for held in (self.samples, self.infos):
            for coords in [c for c in held if c[0] == shard]:
                del held[coords]

    def coordinates(self, position: int) -> tuple[int, int, int]:
        return int(self.order.shard[position]), int(self.order.sample[position]), int(self.order.sub[position])

    def get(self, shard: int, index: int, parse) -> tuple[dict, SampleInfo]:
        """A sample and its parsed metadata; raises its SampleError. A sample of a window
        already released (the item a substitute repeats at the end) is read again alone."""
        if (shard, index) not in self.samples:
            self.samples.update(self.reader.read([(shard, index)]))
        sample = self.samples[shard, index]
        if isinstance(sample, SampleError):
            raise sample.at()
        info = self.infos.get((shard, index))
        if info is None:
            try:
                info = self.infos[shard, index] = parse(sample)
            except SampleError as exc:
                info = self.infos[shard, index] = exc
        if isinstance(info, SampleError):
            raise info.at()
        return sample, info


BLOCKS_PER_WINDOW = 64


def shuffle_block_bytes(shuffle_block: int | str, buffer_bytes: int, request_bytes: int) -> int | None:
    """The shuffle block in bytes (None: whole shards). "auto": a 64th of the shuffle buffer,
    so that a window holds samples of some 64 blocks from all over the dataset whatever the
    samples' size (a fixed 4 MB block under a 16-sample buffer of 25 KB samples moved a few
    neighbours together and repeated 100x more batch pairs from epoch to epoch than a global
    shuffle; measured over a grid in tests/streaming/test_stream_plan.py), capped at one
    ranged request (StorageOptions.block_bytes): a block is read with one request."""
    if shuffle_block == "shard":
        return None
    if shuffle_block == "auto":
        return max(1, min(request_bytes, buffer_bytes // BLOCKS_PER_WINDOW))
    return max(1, option_bytes("shuffle_block", shuffle_block))


def _blocks_split_shards(catalog: Catalog, block_bytes: int | None) -> bool:
    """Whether some shard holds more than one shuffle block (else blocks are whole shards)."""
    if block_bytes is None or not len(catalog.sizes):
        return False
    return int(blocks(catalog, block_bytes)[-1]) + 1 > int((catalog.lengths > 0).sum())
