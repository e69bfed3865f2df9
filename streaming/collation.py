"""Batching items whose frame counts differ (chunk mode, segment mode without num_frames).

`collate` pads every per-frame tensor along T to the longest item, with `frame_mask`
(bool [B, T]) marking real frames; padded frame_index/frame_labels are -1. Tensors stay
uint8 (pin_memory works; normalise on the GPU). Non-tensor fields become lists. In a
DataLoader worker the batch's video is made in a slot of the worker's batch pool and its
other large tensors in shared memory: they reach the main process as handles; small tensors
(frame_mask, frame_index, ...) cross by value (streaming.pool).
"""

from __future__ import annotations

from typing import Any

import torch

from .pool import SMALL, by_value, shared_tensor

# field -> the axis that is T (video is [V, T, C, H, W], keypoints [V, T, ...])
_TIME_AXIS = {"video": 1, "frame_index": 0, "frame_labels": 0, "keypoints_mask": 1}
_PAD = {"frame_index": -1, "frame_labels": -1}


def _pad(tensors: list[torch.Tensor], axis: int, length: int, value: int, shared: bool) -> torch.Tensor:
    shape = list(tensors[0].shape)
    shape[axis] = length
    if shared and tensors[0].dtype == torch.uint8:  # video: a slot of the worker's batch pool (streaming.pool)
        out = shared_tensor((len(tensors), *shape), "batch")
    else:
        out = torch.empty([len(tensors), *shape], dtype=tensors[0].dtype)
        if shared and out.nbytes > SMALL:  # sent as a handle, not a copy (as torch's default_collate); small ones by value
            out.share_memory_()
    if any(t.shape[axis] < length for t in tensors):
        out.fill_(value)
    for i, t in enumerate(tensors):
        out[i].narrow(axis, 0, t.shape[axis]).copy_(t)
    return out


def collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    shared = torch.utils.data.get_worker_info() is not None
    lengths = [len(item["frame_index"]) for item in items]
    longest = max(lengths)
    batch: dict[str, Any] = {"frame_mask": torch.arange(longest)[None, :] < torch.tensor(lengths)[:, None]}
    for field in items[0]:
        values = [item[field] for item in items]
        if field in _TIME_AXIS:
            batch[field] = _pad(values, _TIME_AXIS[field], longest, _PAD.get(field, 0), shared)
        elif field == "keypoints":
            batch[field] = {name: _pad([v[name] for v in values], 1, longest, 0, shared) for name in values[0]}
        elif field == "label_id":
            batch[field] = torch.tensor(values, dtype=torch.int64)
        else:
            batch[field] = values
    return by_value(batch) if shared else batch
