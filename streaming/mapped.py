"""VideoShardMapDataset: random access to the items of vidshard shards (a torch map-style
Dataset), for samplers, evaluation in order and looking at item i.

Item i is found from index.json alone (`mapindex.py`): its shard, its sample's byte range,
its place among the sample's items. `ds[i]` reads exactly that sample's byte range (one
ranged read; the members of the selected views only), checks it as the streaming reader
does (the same `SampleReader`, tar and meta checks and limits), and decodes only the frames
the item needs (the same `build_item`): the items are those of `VideoShardDataset` with
the same arguments, field for field. Per thread of each process it holds one sample's
bytes while building an item, a decoder and a few open shard files (`handles.py`);
nothing is read ahead.
"""

from __future__ import annotations

import collections
import logging
import multiprocessing
import multiprocessing.context
import operator
import os
import threading
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from .decode import ClipDecoder
from .errors import SampleError
from .handles import OPEN_SHARDS, HandleReader, ShardHandles
from .items import build_item, parse_sample
from .mapindex import item_index, item_labels, video_items
from .options import clip_rng, open_source, sample_items, sample_reader
from .remote import StorageOptions, redact
from .tario import Limits
from .world import World

log = logging.getLogger("vidshard.streaming")


class VideoShardMapDataset(torch.utils.data.Dataset):
    """Items of vidshard shards by index; see docs/streaming.md ("Random access")."""

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
        seed: int = 0,
        transform: Callable[[dict], dict] | None = None,
        decode_threads: int = 1,
        videos: Sequence[str] | None = None,
        limits: Limits = Limits(),
        storage: StorageOptions | None = None,
        cache_dir: str | None = None,
        cache_limit: int | str = "50GB",
        verify_cache: bool = True,
        open_shards: int = OPEN_SHARDS,
    ):
        src = open_source(source, sample=sample, num_frames=num_frames, stride=stride, img_size=img_size, views=views,
                          load_rgb=load_rgb, load_kpt=load_kpt, limits=limits, storage=storage, cache_dir=cache_dir,
                          cache_limit=cache_limit, verify_cache=verify_cache)
        self.manifest, self.urls, self.storage, self.cache, self.options = src.manifest, src.urls, src.storage, src.cache, src.options
        self.seed, self.transform, self.decode_threads = seed, transform, decode_threads
        ShardHandles(open_shards)  # refuse a bad size here, not in the first worker
        self.open_shards = open_shards
        items = sample_items(self.manifest, sample, videos, limits)
        self.index = item_index(items)
        needed = sum(shard.filesize for shard, counts in zip(self.manifest.shards, items) if counts.any())
        if self.cache is not None and self.cache.limit < needed:
            # Items come in any order: a cache that cannot hold every shard they lie in evicts
            # shards still needed and downloads a whole shard again for most items (measured with
            # open_shards=1 at half the dataset: a whole-shard download per access; open handles
            # hide that only by keeping evicted shards on disk). By range an item costs itself.
            log.warning("cache_limit (%d bytes) is below the %d bytes of the shards this dataset reads: random access "
                        "would download whole shards again and again; reading by range, without the cache. To use "
                        "the cache: a cache_limit that holds them (docs/streaming.md)", self.cache.limit, needed)
            self.cache = None
        # Shared with DataLoader workers (inherited at their start), so set_epoch() in the
        # main process reaches persistent workers too (clip windows depend on the epoch).
        self._epoch = multiprocessing.RawValue("q", 0)
        self.stats: collections.Counter = collections.Counter()
        self._labels: np.ndarray | None = None  # computed on first use, from index.json
        self._videos: dict[str, np.ndarray] | None = None
        self._local = threading.local()  # .state: this thread's open files and decoder (_Local)

    # -- epoch -------------------------------------------------------------------------
    def set_epoch(self, epoch: int) -> None:
        """Clip mode draws each sample's window from (seed, epoch, shard, sample), as the
        streaming dataset does: call every epoch for new windows."""
        self._epoch.value = epoch

    @property
    def epoch(self) -> int:
        return self._epoch.value

    # -- the index (index.json alone) ---------------------------------------------------
    def __len__(self) -> int:
        return len(self.index)

    @property
    def label_ids(self) -> np.ndarray:
        """Each item's label id (int64, -1 where an item has none), without opening a shard:
        segment mode: the segment's label; chunk and clip modes: the chunk's label (the one
        covering most of its frames). Raises mapindex.NoLabelsError for an index.json written
        before it listed labels."""
        if self._labels is None:
            self._labels = item_labels(self.index, self.manifest, self.options.mode)
        return self._labels

    @property
    def video_ids(self) -> list[str]:
        """The videos with items here, sorted."""
        return sorted(self._video_items())

    def indices_of(self, video_id: str) -> np.ndarray:
        """The video's items in frame order (chunks by start frame, then segments), wherever
        its chunks lie among the shards."""
        items = self._video_items().get(video_id)
        if items is None:
            raise KeyError(f"video {video_id!r} has no items in this dataset")
        return items

    def locate(self, i: int) -> tuple[str, str, int]:
        """(shard URL, sample key, item in the sample) of item i, without reading it."""
        shard, sample, sub = self.index.locate(self._position(i))
        return redact(self.urls[shard]), self.manifest.shards[shard].samples[sample].key, sub

    def _video_items(self) -> dict[str, np.ndarray]:
        if self._videos is None:
            self._videos = video_items(self.index, self.manifest)
        return self._videos

    def _position(self, i) -> int:
        i = operator.index(i)
        n = len(self.index)
        if not -n <= i < n:
            raise IndexError(f"item {i} out of range: the dataset has {n} items")
        return i % n

    # -- items ---------------------------------------------------------------------------
    def __getitem__(self, i) -> dict[str, Any]:
        """Item i, read and decoded now. A sample that cannot be delivered raises its typed
        SampleError (ShardReadError, ShardFormatError, KeypointError, DecodeError) naming
        shard, key, member and view: there is no skip policy here (docs/streaming.md)."""
        shard, index, sub = self.index.locate(self._position(i))
        local = self._process()
        try:
            item = self._build(local, shard, index, sub)
        except SampleError:
            if not local.reader.recover(shard):  # the error stands: the shard itself is bad
                raise
            item = self._build(local, shard, index, sub)  # its damaged cache copy was dropped: read again
        self.stats["items"] += 1
        return self.transform(item) if self.transform else item

    def _build(self, local: _Local, shard: int, index: int, sub: int) -> dict[str, Any]:
        url = redact(self.urls[shard])
        sample = local.reader.read([(shard, index)])[shard, index]
        if isinstance(sample, SampleError):
            raise sample
        entry = self.manifest.shards[shard].samples[index]
        info = parse_sample(sample, entry.nframes, entry.nsegments, self.options, clip_rng(self.seed, self.epoch, entry.key),
                            url, entry.segments)
        if sub >= len(info.specs):  # index.json and the sample agree on the counts (parse_sample): not expected
            raise SampleError(f"index.json lists more items than the sample has ({len(info.specs)})", shard=url, key=entry.key)
        item = build_item(sample, info, info.specs[sub], self.options, local.decoder, url)
        del sample, info
        item["meta"]["padded"] = False  # the streaming dataset's field: never a repeat here
        return item

    def _process(self) -> _Local:
        """This thread's reader, open files and decoder, made on first use in each thread of
        each process: threads calling ds[i] at once never share a decoder (its swscale context
        and output buffer: shared, they mixed two items' pixels) or the LRU of open files
        (one thread's eviction closed a file another was reading)."""
        local = getattr(self._local, "state", None)
        if local is not None and local.pid != os.getpid():  # inherited through a fork (a DataLoader worker)
            local.handles.close()  # this process's copies of the parent's descriptors
            local = None  # its decoder is let go safely (decode.ClipDecoder.__del__)
        if local is None:
            handles = ShardHandles(self.open_shards)
            reader = sample_reader(self, self.stats, HandleReader, handles=handles)
            local = self._local.state = _Local(pid=os.getpid(), handles=handles, reader=reader,
                                               decoder=ClipDecoder(threads=self.decode_threads, stats=self.stats,
                                                                   shared=World.detect().in_worker))
        return local

    def close(self) -> None:
        """Close this thread's open shard files (they reopen on the next access)."""
        local = getattr(self._local, "state", None)
        if local is not None:
            local.handles.close()
            self._local.state = None

    # -- pickling (DataLoader workers under spawn, a notebook's copies) ------------------
    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        del state["_local"]  # open files, decoder buffers: every process and thread makes its own
        state["_labels"] = state["_videos"] = None  # derived from index.json: recomputed where used
        if multiprocessing.context.get_spawning_popen() is None:
            # Not a process start (pickle.dumps, copy.deepcopy): the shared epoch cannot be sent, its value is.
            state["_epoch"] = self.epoch
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        if isinstance(state["_epoch"], int):
            state["_epoch"] = multiprocessing.RawValue("q", state["_epoch"])
        self.__dict__.update(state, _local=threading.local())


class _Local:
    """What one process opened for reading: never pickled, never used by another process."""

    def __init__(self, *, pid: int, handles: ShardHandles, reader: HandleReader, decoder: ClipDecoder):
        self.pid, self.handles, self.reader, self.decoder = pid, handles, reader, decoder
