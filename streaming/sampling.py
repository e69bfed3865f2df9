"""Frame samplers: which chunk-local frames an item decodes. Pure functions of plain values.

The same indices are used for every view, so views stay in sync. Edge policy: when an item
asks for more frames than its span holds, indices repeat (uniform sampling rounds to the
nearest frame; a clip longer than the chunk repeats the chunk's last frame).
"""

from __future__ import annotations

import numpy as np

MODES = ("chunk", "segment", "clip")


def uniform(start: int, end: int, num_frames: int | None) -> np.ndarray:
    """`num_frames` indices spread evenly over `[start, end)` (all of them when None)."""
    if end <= start:
        raise ValueError(f"empty span [{start}, {end})")
    if num_frames is None:
        return np.arange(start, end, dtype=np.int64)
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    return np.linspace(start, end - 1, num_frames).round().astype(np.int64)


def clip_window(length: int, num_frames: int, stride: int, rng: np.random.Generator) -> np.ndarray:
    """A random window of `num_frames` frames `stride` apart inside `[0, length)`."""
    if num_frames < 1 or stride < 1:
        raise ValueError(f"clip needs num_frames >= 1 and stride >= 1, got {num_frames}, {stride}")
    span = (num_frames - 1) * stride + 1
    start = int(rng.integers(0, length - span + 1)) if span <= length else 0
    return np.minimum(start + stride * np.arange(num_frames, dtype=np.int64), length - 1)


def frame_labels(frames: np.ndarray, segments) -> np.ndarray:
    """Label id of each chunk-local frame from sorted, disjoint (start, end, label_id) segments
    (a list or an [S, 3] array); -1 where none. A binary search per frame, not a pass per
    segment: an item costs O(frames x log segments) however many segments its sample has."""
    table = np.asarray(segments, dtype=np.int64).reshape(-1, 3)
    labels = np.full(len(frames), -1, dtype=np.int64)
    at = np.searchsorted(table[:, 0], frames, side="right") - 1  # the last segment starting at or before each frame
    inside = at >= 0
    inside[inside] = frames[inside] < table[at[inside], 1]
    labels[inside] = table[at[inside], 2]
    return labels


def chunk_label(segments: list[tuple[int, int]]) -> int:
    """The label id of a chunk (the label of chunk- and clip-mode items): the one covering
    the most of its frames, from (label_id, frames) of its segments (-1 ids ignored); ties
    go to the lower id; -1 when no segment covers a frame. One function for the item and
    for index.json, so `ds.label_ids` and `ds[i]["label_id"]` cannot disagree."""
    totals: dict[int, int] = {}
    for label_id, frames in segments:
        if label_id >= 0:
            totals[label_id] = totals.get(label_id, 0) + frames
    return min(totals, key=lambda i: (-totals[i], i)) if totals else -1
