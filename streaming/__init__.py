"""vidshard's reader: stream chunk samples from shards with bounded memory, or read any
item by index (`VideoShardMapDataset`).

`streaming.format` (the sample format shared with the writer) imports without torch; the
dataset and collate function load torch on first use.

Note: MosaicML Streaming is also imported as `streaming`; the two cannot share one
environment.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

__all__ = ["VideoShardDataset", "VideoShardMapDataset", "collate", "World", "WdsItems", "wds_items"]

if TYPE_CHECKING:
    from .collation import collate
    from .dataset import VideoShardDataset
    from .mapped import VideoShardMapDataset
    from .wds import WdsItems, wds_items
    from .world import World


def __getattr__(name: str):
    if name == "VideoShardDataset":
        from .dataset import VideoShardDataset

        return VideoShardDataset
    if name == "VideoShardMapDataset":
        from .mapped import VideoShardMapDataset

        return VideoShardMapDataset
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
