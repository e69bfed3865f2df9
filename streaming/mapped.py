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

import operator
import os
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from .core import DatasetCore, retried
from .decode import ClipDecoder
from .errors import SampleError
from .handles import HandleReader, ShardHandles
from .mapindex import item_index, item_labels, video_items
from .options import MapOptions, sample_reader
from .pool import for_the_queue
from .remote import redact


class VideoShardMapDataset(DatasetCore, torch.utils.data.Dataset):
    """Items of vidshard shards by index; see docs/streaming.md ("Random access").

    The settings are those of `MapOptions` (options.py), given as keywords, as a `MapOptions`
    value, or both (the keywords replace the value's)."""

    def __init__(self, source: str | Sequence[str], options: MapOptions | None = None, **settings: Any):
        opts = MapOptions.given("VideoShardMapDataset", options, settings)
        DatasetCore.__init__(self, source, opts)
        ShardHandles(opts.open_shards)  # refuse a bad size here, not in the first worker
        self.open_shards = opts.open_shards
        self.index = item_index(self.catalog)
        # Items come in any order: a cache that cannot hold every shard they lie in evicts
        # shards still needed and downloads a whole shard again for most items (measured with
        # open_shards=1 at half the dataset: a whole-shard download per access; open handles
        # hide that only by keeping evicted shards on disk). By range an item costs itself.
        self._cache_short(sum(shard.filesize for shard, counts in zip(self.manifest.shards, self.catalog.sample_items)
                              if counts.any()),
                          "of the shards this dataset reads: random access would download whole shards again and again")
        self._labels: np.ndarray | None = None  # computed on first use, from index.json
        self._videos: dict[str, np.ndarray] | None = None
        self._local = threading.local()  # .state: this thread's open files and decoder (_Local)

    # -- the index (index.json alone) ---------------------------------------------------
    def __len__(self) -> int:
        return len(self.index)

    @property
    def label_ids(self) -> np.ndarray:
        """Each item's label id (int64, -1 where an item has none), without opening a shard:
        segment mode: the segment's label; chunk and clip modes: the chunk's label (the one
        covering most of its frames)."""
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

        def build() -> dict[str, Any]:
            sample = local.reader.read([(shard, index)])[shard, index]
            if isinstance(sample, SampleError):
                raise sample
            return self._decode(sample, self._parse(sample, shard, index, self.epoch), shard, sub, local.decoder)

        item = retried(local.reader, shard, build)  # a damaged cache copy is dropped, and read again
        item["meta"]["padded"] = False  # the streaming dataset's field: never a repeat here
        self.stats["items"] += 1
        return for_the_queue(self.transform(item) if self.transform else item)

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
                                               decoder=self._decoder())
        return local

    def close(self) -> None:
        """Close this thread's open shard files (they reopen on the next access)."""
        local = getattr(self._local, "state", None)
        if local is not None:
            local.handles.close()
            self._local.state = None

    # -- pickling (DataLoader workers under spawn, a notebook's copies) ------------------
    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        del state["_local"]  # open files, decoder buffers: every process and thread makes its own
        state["_labels"] = state["_videos"] = None  # derived from index.json: recomputed where used
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self._local = threading.local()


class _Local:
    """What one process opened for reading: never pickled, never used by another process."""

    def __init__(self, *, pid: int, handles: ShardHandles, reader: HandleReader, decoder: ClipDecoder):
        self.pid, self.handles, self.reader, self.decoder = pid, handles, reader, decoder
