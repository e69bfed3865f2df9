"""The map-style dataset's items, labels and per-video order: pure functions of index.json.

Items are numbered in index.json's shard order, then file order inside a shard, then segment
order inside a sample (segment mode; one item per sample otherwise), skipping the samples of
videos outside `videos=`. Nothing here opens a shard.
"""

from __future__ import annotations

import dataclasses
import re

import numpy as np

from .format import Manifest, label_ids
from .order import Catalog, item_coordinates
from .sampling import chunk_label

_KEY = re.compile(r"(.+)_(\d+)")  # <video_id>_<chunk>: format.sample_key


@dataclasses.dataclass(frozen=True, kw_only=True)
class ItemIndex:
    shard: np.ndarray  # per sample (all shards' samples, in order): its shard
    sample: np.ndarray  # per sample: its position in its shard
    item_sample: np.ndarray  # per item: its sample (into `shard`/`sample`)
    item_sub: np.ndarray  # per item: its position among its sample's items (the segment in segment mode)

    def __len__(self) -> int:
        return len(self.item_sample)

    def locate(self, i: int) -> tuple[int, int, int]:
        """(shard, sample in shard, item in sample) of item i."""
        s = int(self.item_sample[i])
        return int(self.shard[s]), int(self.sample[s]), int(self.item_sub[i])


def item_index(catalog: Catalog) -> ItemIndex:
    """Every item of the catalog (`core.DatasetCore.catalog`), numbered as an unshuffled epoch."""
    item_sample, shard, sample, sub = item_coordinates(catalog, np.arange(len(catalog.items)))
    return ItemIndex(shard=shard.astype(np.int32), sample=sample.astype(np.int32), item_sample=item_sample.astype(np.int64),
                     item_sub=sub.astype(np.int32))


def item_labels(index: ItemIndex, manifest: Manifest, mode: str) -> np.ndarray:
    """Each item's label id, as `build_item` gives it: the segment's label in segment mode, the
    chunk's label (`sampling.chunk_label`) in chunk and clip modes; -1 where there is none."""
    ids = label_ids(manifest.labels)
    out = np.full(len(index), -1, dtype=np.int64)
    used = np.unique(index.item_sample)
    starts = np.searchsorted(index.item_sample, used)
    for s, start in zip(used.tolist(), starts.tolist()):
        entry = manifest.shards[index.shard[s]].samples[index.sample[s]]
        pairs = [(ids[label], frames) for label, frames in entry.segments]
        if mode == "segment":
            out[start : start + len(pairs)] = [label for label, _ in pairs]
        else:
            out[start] = chunk_label(pairs)
    return out


def video_items(index: ItemIndex, manifest: Manifest) -> dict[str, np.ndarray]:
    """video id -> its items in frame order: chunks by chunk number (= by start frame), then
    each chunk's items in segment order."""
    if not len(index):
        return {}
    videos, chunks = [], []
    for s in range(len(index.shard)):
        key = manifest.shards[index.shard[s]].samples[index.sample[s]].key
        match = _KEY.fullmatch(key)
        if match is None:
            raise ValueError(f"index.json sample key {key!r} is not <video_id>_<chunk>: its video's order is unknown")
        videos.append(match.group(1))
        chunks.append(int(match.group(2)))
    names, video_of_sample = np.unique(np.array(videos, dtype=object), return_inverse=True)
    video = video_of_sample[index.item_sample]
    chunk = np.asarray(chunks, dtype=np.int64)[index.item_sample]
    order = np.lexsort((index.item_sub, chunk, video))
    bounds = np.searchsorted(video[order], np.arange(len(names) + 1))
    return {str(names[v]): order[bounds[v] : bounds[v + 1]] for v in range(len(names)) if bounds[v + 1] > bounds[v]}
