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
import io
import os
from collections import Counter
from collections.abc import Callable, Iterator

from streaming.errors import ShardFormatError, ShardReadError
from streaming.format import META, Segment
from streaming.format import MAX_INT
from streaming.items import sample_meta
from streaming.ranges import open_local, open_range
from streaming.remote import StorageOptions, filesystem, protocol_of, redact, retry
from streaming.tario import Limits, Span, iter_members


@contextlib.contextmanager
def open_whole(url: str, options: StorageOptions = StorageOptions()) -> Iterator[tuple[io.BufferedReader, int]]:
    """(stream, size) of a whole shard, through the reader's one range-opening path
    (`streaming.ranges.open_range`: a local file, or a URL read by range with the reader's
    retries and timeouts; an HTTP server that ignores Range from plain GETs). A shard that
    cannot be opened or read is a ShardReadError naming it redacted, never an OSError that
    carries the URL with its credentials."""
    stats: Counter = Counter()
    try:
        if protocol_of(url) == "file":
            f = open_local(url)
            size = os.fstat(f.fileno()).st_size
            stream = open_range(f, 0, size, options, stats)
        else:
            fs, path = filesystem(url, options)
            size = retry(lambda: fs.size(path), "reading the shard's size:", url, options, stats)
            if not isinstance(size, int):
                raise ShardReadError("the storage does not tell the shard's size", shard=redact(url))
            stream = open_range(url, 0, size, options, stats, whole_get=True)
    except OSError as exc:  # the local disk (EIO, EMFILE): typed, the URL redacted
        raise ShardReadError(f"cannot open the shard ({type(exc).__name__})", shard=redact(url)) from None
    with stream:
        yield stream, size


@contextlib.contextmanager
def open_shard(url: str) -> Iterator[Span]:
    """The whole shard as a Span: forward seeks over members not read, bounded reads."""
    with open_whole(url) as (stream, size):
        yield Span(stream, size, url)


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
