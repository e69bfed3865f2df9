"""What both datasets are before they differ: the source and the item builder.

`DatasetCore` opens the source from one options value (`options.py`), holds the manifest,
shard URLs, storage, cache and per-item `Options`, each sample's items and bytes (the
`Catalog` both the epoch plan and the map index count from), the epoch (shared with
DataLoader workers) and the decode statistics; it turns a read sample into item `sub` of it
(parse -> count check -> decode), retrying once after the reader dropped a damaged cache
copy. `VideoShardDataset` adds the epoch plan and its iteration, `VideoShardMapDataset` the
lookup of item i; nothing here chooses which sample comes next.
"""

from __future__ import annotations

import collections
import logging
import multiprocessing
import multiprocessing.context
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .decode import ClipDecoder
from .errors import SampleError
from .items import SampleInfo, build_item, parse_sample
from .options import ReadOptions, clip_rng, open_source, sample_items
from .order import Catalog
from .reading import SampleReader
from .remote import redact
from .world import World

log = logging.getLogger("vidshard.streaming")


class DatasetCore:
    """The source, the item builder and the epoch both dataset classes hold."""

    def __init__(self, source: str | Sequence[str], opts: ReadOptions):
        src = open_source(source, opts)
        self.manifest, self.urls, self.storage, self.cache, self.options = src.manifest, src.urls, src.storage, src.cache, src.options
        self.seed, self.transform, self.decode_threads = opts.seed, opts.transform, opts.decode_threads
        self.catalog = Catalog(
            sample_items=sample_items(self.manifest, opts.sample, opts.videos, opts.limits),
            sample_bytes=[np.array([s.size for s in sh.samples], dtype=np.int64) for sh in self.manifest.shards],
        )
        # Shared with DataLoader workers (inherited at their start), so set_epoch() in the main
        # process reaches persistent workers too (the plan and clip windows depend on the epoch).
        self._epoch = multiprocessing.RawValue("q", 0)
        self.stats: collections.Counter = collections.Counter()

    def _cache_short(self, needed: int, why: str, remedy: str = "") -> None:
        """Read by range, without the cache, when it cannot hold the `needed` bytes: a
        whole-shard cache that evicts shards still needed downloads whole shards again and
        again (`why`: how this dataset would; `remedy`: another way out than a larger cache)."""
        if self.cache is not None and self.cache.limit < needed:
            log.warning("cache_limit (%d bytes) is below the %d bytes %s; reading by range, without the cache. To use "
                        "the cache: a cache_limit that holds them%s (docs/streaming.md)", self.cache.limit, needed, why, remedy)
            self.cache = None

    # -- epoch -------------------------------------------------------------------------
    def set_epoch(self, epoch: int) -> None:
        """The epoch's plan (streaming) and clip windows (both) follow it: call every epoch."""
        self._epoch.value = epoch

    @property
    def epoch(self) -> int:
        return self._epoch.value

    # -- pickling (DataLoader workers under spawn, a notebook's copies) ------------------
    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        if multiprocessing.context.get_spawning_popen() is None:
            # Not a process start (pickle.dumps, copy.deepcopy): the shared epoch cannot be sent, its value is.
            state["_epoch"] = self.epoch
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        if isinstance(state["_epoch"], int):
            state["_epoch"] = multiprocessing.RawValue("q", state["_epoch"])
        self.__dict__.update(state)

    # -- items -------------------------------------------------------------------------
    def _decoder(self) -> ClipDecoder:
        return ClipDecoder(threads=self.decode_threads, stats=self.stats, shared=World.detect().in_worker)

    def _parse(self, sample: dict, shard: int, index: int, epoch: int) -> SampleInfo:
        """The sample's JSON checked against index.json, and its items (clip windows drawn for `epoch`)."""
        entry = self.manifest.shards[shard].samples[index]
        rng = clip_rng(self.seed, epoch, entry.key)
        return parse_sample(sample, entry.nframes, entry.nsegments, self.options, rng, redact(self.urls[shard]), entry.segments)

    def _decode(self, sample: dict, info: SampleInfo, shard: int, sub: int, decoder: ClipDecoder) -> dict[str, Any]:
        """Item `sub` of a parsed sample, its frames decoded."""
        url = redact(self.urls[shard])
        if sub >= len(info.specs):  # index.json and the sample agree on the counts (parse_sample): not expected
            raise SampleError(f"index.json lists more items than the sample has ({len(info.specs)})", shard=url, key=sample["__key__"])
        return build_item(sample, info, info.specs[sub], self.options, decoder, url)


def retried(reader: SampleReader, shard: int, build: Callable[[], dict], forget: Callable[[], None] = lambda: None) -> dict:
    """build(); once more after a SampleError the reader recovers from (a damaged cache copy,
    now dropped; `forget` lets go of what was read from it)."""
    try:
        return build()
    except SampleError:
        if not reader.recover(shard):  # the error stands: the shard itself is bad
            raise
        forget()
        return build()

