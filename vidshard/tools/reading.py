"""How the tools read shards: through the reader's own checks and limits, never around them.

A shard is opened as a `streaming.tario.Span` (header reads bounded as the reader bounds
them) and walked by `streaming.tario.iter_members` (member checks, `Limits`, a damaged or
truncated tar as a ShardFormatError); meta.json and timeline.json are parsed by
`streaming.items.sample_meta`. The few meta.json fields that only the tools read
(`video_frames`, `keypoint_frames`) are checked here the same way, so a hostile value
is a ShardFormatError naming shard, key and member, not a ZeroDivisionError in `inspect`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import fsspec

from streaming.errors import ShardFormatError
from streaming.format import META, Segment
from streaming.format import MAX_INT
from streaming.items import sample_meta
from streaming.tario import Limits, Span, iter_members


@contextlib.contextmanager
def open_shard(url: str) -> Iterator[Span]:
    """The whole shard as a Span: forward seeks over members not read, bounded reads."""
    fs, path = fsspec.core.url_to_fs(url)
    with fs.open(path, "rb") as f:
        yield Span(f, fs.size(path), url)


def shard_members(url: str, want: Callable[[str], bool], limits: Limits = Limits()) -> Iterator[tuple[str, str, int, bytes | None]]:
    """(key, suffix, size, data) of every member of a shard; data only for known suffixes `want` accepts."""
    with open_shard(url) as span:
        yield from iter_members(span, url, limits, want)


def _count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def sample_fields(sample: dict, url: str) -> tuple[dict, list[Segment]]:
    """meta.json and timeline.json of a sample as the reader checks them, plus the fields
    only the tools read: `video_frames` (an integer, at least `end_frame`) and
    `keypoint_frames` ({view: frames of the chunk with keypoints})."""
    meta, timeline = sample_meta(sample, url)
    key = sample["__key__"]

    def refuse(why: str) -> ShardFormatError:
        return ShardFormatError(f"meta.json {why}", shard=url, key=key, member=f"{key}.{META}")

    if not _count(meta.get("video_frames")) or not meta["end_frame"] <= meta["video_frames"] <= MAX_INT:
        raise refuse(f"video_frames {str(meta.get('video_frames'))[:40]} is not a frame count of at least end_frame "
                     f"{meta['end_frame']}")
    frames = meta["end_frame"] - meta["start_frame"]
    coverage = meta.get("keypoint_frames")  # written by every vidshard (format_version 1): missing is refused
    if not isinstance(coverage, dict) or not all(_count(n) and 0 <= n <= frames for n in coverage.values()):
        raise refuse(f"keypoint_frames {str(coverage)[:80]} is not {{view: frames with keypoints, at most {frames}}}")
    return meta, timeline
