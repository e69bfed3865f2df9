"""Pure planning for the writer: chunk ranges, timeline clipping, sample order, shard packing.

No I/O and no media libraries here: every function maps plain values to plain values, so
tests check them exhaustively (hypothesis) without files. Ranges are `[start, end)`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from numpy.random import default_rng

from streaming.format import Segment, sample_key

TAR_BLOCK = 512
TAR_RECORD = 20 * TAR_BLOCK  # tarfile pads the archive to whole records on close
# An encode task is a run of consecutive chunks of one video (task.py). Each run starts its
# decoders once (open, seek, up to a source GOP decoded in vain before its first frame and
# after its last, to check the count at a keyframe): worth it for MIN_RUN_FRAMES or more.
# Cut to about TASKS_PER_WORKER runs per worker, every worker has work until near the end;
# one worker gets whole videos (nothing to share, so nothing to pay for entering).
MIN_RUN_FRAMES = 256
TASKS_PER_WORKER = 2
_INTERLEAVE_STREAM = 1  # RNG stream ids (seeded from tuples): the chunks of a group of videos,
_VIDEO_STREAM = 2  # and the order of the videos


def chunk_plan(total: int, max_frames: int | None, overlap: int = 0) -> list[tuple[int, int]]:
    """Chunk ranges of a `total`-frame video.

    Starts are 0, S, 2S, ... with S = max_frames - overlap; a chunk is started only while
    the previous one has not reached the last frame. So no chunk is longer than
    max_frames, consecutive chunks share exactly `overlap` frames, and only the last chunk
    may be shorter. With overlap 0 the chunks tile the video: ceil(total / max_frames) of
    them (the original rule). max_frames None means one chunk for the whole video.
    """
    if total < 1:
        raise ValueError(f"a video needs at least one frame, got total={total}")
    if max_frames is None:
        return [(0, total)]
    if max_frames < 1:
        raise ValueError(f"max_video_frames must be >= 1, got {max_frames}")
    if not 0 <= overlap < max_frames:
        raise ValueError(f"overlap must be in [0, max_video_frames), got {overlap} with {max_frames}")
    step = max_frames - overlap
    chunks = []
    start = 0
    while True:
        end = min(start + max_frames, total)
        chunks.append((start, end))
        if end == total:
            return chunks
        start += step


def run_frames(total_frames: int, parallelism: int, min_frames: int = MIN_RUN_FRAMES) -> int:
    """Frames per encode task: the dataset's frames over TASKS_PER_WORKER tasks per worker,
    never under `min_frames`; with one worker, every video whole."""
    if parallelism <= 1:
        return max(1, total_frames)
    return max(min_frames, -(-total_frames // (parallelism * TASKS_PER_WORKER)))


def cut_runs(chunks: Sequence[tuple[int, int]], frames: int, todo: Sequence[bool] | None = None) -> list[tuple[int, int]]:
    """A video's chunks (chunk_plan) cut into runs `[first, stop)` of chunk indices: consecutive
    chunks, each chunk in exactly one run, runs of near-equal length of about `frames` frames
    (at least one chunk). `todo[c]` False: chunk c is done (an earlier run): left out, so runs
    never cross it. Pure: which runs a video was cut into never changes the bytes written."""
    todo = [True] * len(chunks) if todo is None else list(todo)
    if len(todo) != len(chunks):
        raise ValueError(f"todo has {len(todo)} flags for {len(chunks)} chunks")
    if frames < 1:
        raise ValueError(f"a run needs at least one frame, got {frames}")
    runs: list[tuple[int, int]] = []
    c = 0
    while c < len(chunks):
        if not todo[c]:
            c += 1
            continue
        span = c
        while span < len(chunks) and todo[span]:
            span += 1
        # chunks [c, span) are to do: n runs of near-equal chunk counts
        n = max(1, min(span - c, (chunks[span - 1][1] - chunks[c][0]) // frames))
        bounds = [c + (span - c) * i // n for i in range(n + 1)]
        runs += list(zip(bounds, bounds[1:]))
        c = span
    return runs


@dataclasses.dataclass(frozen=True, kw_only=True)
class SourceSegment:
    """A segment of a whole video's timeline, in source frames, `[start, end)`."""

    start: int
    end: int
    label: str


def check_timeline(raw: Any, total: int) -> list[SourceSegment]:
    """Validate an annotation's "timeline" list against a `total`-frame video.

    Raises ValueError naming the offending segment; returns the typed segments.
    """
    if not isinstance(raw, list):
        raise ValueError(f'"timeline" must be a list, got {type(raw).__name__}')
    segments = []
    for i, seg in enumerate(raw):
        if not isinstance(seg, dict):
            raise ValueError(f"segment {i} must be an object, got {seg!r}")
        start, end, label = seg.get("start"), seg.get("end"), seg.get("label")
        for name, value in (("start", start), ("end", end)):
            if not isinstance(value, int) or isinstance(value, bool):
                raise ValueError(f"segment {i}: {name} must be an integer frame index, got {value!r}")
        if not isinstance(label, str) or not label:
            raise ValueError(f"segment {i}: label must be a non-empty string, got {label!r}")
        if end <= start:
            raise ValueError(f"segment {i} ({label!r}): end {end} <= start {start}")
        if start < 0 or end > total:
            raise ValueError(f"segment {i} ({label!r}) [{start}, {end}) lies outside the video's {total} frames")
        if segments and start < segments[-1].end:
            prev = segments[-1]
            raise ValueError(
                f"segment {i} ({label!r}) [{start}, {end}) overlaps or precedes segment {i - 1} "
                f"({prev.label!r}) [{prev.start}, {prev.end}): segments must be sorted and disjoint"
            )
        segments.append(SourceSegment(start=start, end=end, label=label))
    return segments


def clip_timeline(segments: Sequence[SourceSegment], start: int, end: int) -> list[Segment]:
    """The segments intersecting chunk `[start, end)`, clipped and re-based to the chunk."""
    clipped = []
    for segment_id, seg in enumerate(segments):
        lo, hi = max(seg.start, start), min(seg.end, end)
        if lo >= hi:
            continue
        clipped.append(
            Segment(
                label=seg.label,
                start=lo - start,
                end=hi - start,
                global_start=lo,
                global_end=hi,
                segment_id=segment_id,
                truncated_start=seg.start < start,
                truncated_end=seg.end > end,
            )
        )
    return clipped


def interleave(keys: Sequence[str], seed: int, group: int = 0) -> list[str]:
    """A seeded permutation of sample keys, so a shard mixes chunks of many videos.

    Depends only on the SET of keys, the seed and the group number: whichever engine or
    worker count produced the samples, the order is the same.
    """
    ordered = sorted(keys)
    perm = default_rng([seed, _INTERLEAVE_STREAM, group]).permutation(len(ordered))
    return [ordered[i] for i in perm]


def sample_order(chunks_per_video: dict[str, int], seed: int, mix_videos: int) -> list[str]:
    """Every sample key in shard order.

    Videos are put in a seeded order and cut into groups of `mix_videos`; the chunks of a
    group are interleaved, groups follow each other. So a shard mixes the chunks of up to
    `mix_videos` videos, and the shards of a group need only that group's videos encoded:
    shards are written while later groups are still being encoded, and the spool holds
    about one group, never the whole dataset.
    """
    if mix_videos < 1:
        raise ValueError(f"mix_videos must be >= 1, got {mix_videos}")
    videos = sorted(chunks_per_video)
    videos = [videos[i] for i in default_rng([seed, _VIDEO_STREAM]).permutation(len(videos))]
    order: list[str] = []
    for g, first in enumerate(range(0, len(videos), mix_videos)):
        keys = [sample_key(v, c) for v in videos[first : first + mix_videos] for c in range(chunks_per_video[v])]
        order += interleave(keys, seed, g)
    return order


def tar_file_bytes(payload: int) -> int:
    """Size of a tar whose members take `payload` bytes: two end blocks, record padding."""
    return -(-(payload + 2 * TAR_BLOCK) // TAR_RECORD) * TAR_RECORD


def closes_shard(payload: int, size: int, max_shard_bytes: int) -> bool:
    """A shard holding `payload` bytes of samples (at least one) is closed before a sample of
    `size` bytes: with it, the finished tar would be larger than the limit."""
    return tar_file_bytes(payload + size) > max_shard_bytes
