"""vidshard's reader: stream chunk samples from shards with bounded memory, or read any
item by index (`VideoShardMapDataset`), or turn webdataset/wids samples into items (`wds_items`).

The sample format, defined once (the writer imports it too):
    format.py    members, keys, index.json (Manifest, checked on load), Limits, the kpt.npz layout
    units.py     byte sizes from text ("256MB")
The epoch plan, pure functions of index.json's counts (no I/O, no torch):
    plan.py      the epoch plan and resume progress;  order.py  blocks and their permutation
    windows.py   a worker's slice cut into shuffle windows;  world.py  rank and worker, detected once
    sampling.py  which frames an item takes (chunk, segment, clip);  ledger.py  a partition's bookkeeping
    resume.py    loader states: fingerprint, merging across world shapes, frame counts
The read path, shard list -> byte ranges -> checked tar members -> samples -> items. The
shard list is read when a dataset is made (a bad index.json raises then); from the byte
ranges on, a failure is the SampleError of the sample it concerns, which the dataset's
`on_error` takes item by item; only a StorageError (errors.py) stops the job:
    shards.py    the shard list: index.json (bounded, checked) and the shard URLs
    reading.py   byte ranges: a window's samples cut into runs of adjacent ranges, each opened
                 once; samples: each parsed from exactly its own range, its failure its own
    tario.py     checked tar members (untrusted data);  npz.py  keypoint archives, likewise
    items.py     items: a sample's JSON checked, its frames decoded (decode.py: checked against meta.json)
  Where the bytes come from (below reading.py):
    ranges.py    one way to open a byte range (local file, cache copy, URL; plain GETs for
                 servers that ignore Range), and whole shards for the cache
    remote.py    storage options, redaction, transient errors, the one retry policy, the one GET
    cache.py     the node's shard cache;  handles.py  open files per thread (random access)
The datasets:
    options.py   what they take (ReadOptions, StreamOptions, MapOptions: the one set of reader
                 defaults) and build from it first (Source, the per-item Options, the sample reader)
    core.py      DatasetCore: the source, item builder and epoch both datasets hold
    dataset.py   VideoShardDataset (streaming: the epoch plan);  mapped.py + mapindex.py
                 VideoShardMapDataset (random access: the item index)
    wds.py       the webdataset/wids stage;  collation.py  collate;  errors.py  typed errors

`streaming.format` (the sample format shared with the writer) imports without torch; the
dataset and collate function load torch on first use.

Note: MosaicML Streaming is also imported as `streaming`; the two cannot share one
environment.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

__all__ = ["VideoShardDataset", "VideoShardMapDataset", "ReadOptions", "StreamOptions", "MapOptions", "collate", "World",
           "WdsItems", "wds_items"]

if TYPE_CHECKING:
    from .collation import collate
    from .dataset import VideoShardDataset
    from .mapped import VideoShardMapDataset
    from .options import MapOptions, ReadOptions, StreamOptions
    from .wds import WdsItems, wds_items
    from .world import World


def __getattr__(name: str):
    if name == "VideoShardDataset":
        from .dataset import VideoShardDataset

        return VideoShardDataset
    if name == "VideoShardMapDataset":
        from .mapped import VideoShardMapDataset

        return VideoShardMapDataset
    if name in ("ReadOptions", "StreamOptions", "MapOptions"):
        from . import options

        return getattr(options, name)
    if name == "collate":
        from .collation import collate

        return collate
    if name in ("WdsItems", "wds_items"):
        from . import wds

        return getattr(wds, name)
    if name == "World":
        from .world import World

        return World
    raise AttributeError(f"module 'streaming' has no attribute {name!r}")
