"""The vidshard sample and manifest format, defined once for the writer and the reader.

A shard is a plain tar. One sample = one chunk of one video, its members grouped by key
(webdataset convention: the key is the member name up to the FIRST dot):

    <key>.<view>.mp4        H.264 clip of the chunk's frames of one view
    <key>.<view>.kpt.npz    keypoints of the chunk's frames of one view (optional)
    <key>.timeline.json     the source timeline clipped to the chunk
    <key>.meta.json         video id, chunk range, fps, views, sizes, annotation keys

Keys are `<video_id>_<chunk:05d>`; neither keys nor views may contain a dot. Frame ranges
are written `[start, end)`. docs/format.md is the human-readable version of this module.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from typing import IO, Any

FORMAT_NAME = "vidshard"
FORMAT_VERSION = 1
WIDS_KIND = "wids-shard-index-v1"
INDEX_NAME = "index.json"
ERRORS_NAME = "errors.json"

# Safe names: what a video id and a view name may be. No dots (the key/suffix split),
# no slashes (member names are never paths), bounded so tar's 100-byte ustar names fit.
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
RESERVED_VIEWS = frozenset({"timeline", "meta", "kpt", "mp4", "npz", "json"})
CHUNK_DIGITS = 5

# Member suffixes (the part after the key's dot).
TIMELINE = "timeline.json"
META = "meta.json"
CLIP_EXT = "mp4"
KPT_EXT = "kpt.npz"


def sample_key(video_id: str, chunk_index: int) -> str:
    """`<video_id>_<chunk:05d>`; video_id must already be a SAFE_NAME."""
    if not SAFE_NAME.fullmatch(video_id):
        raise ValueError(f"video id {video_id!r} cannot form a sample key")
    if not 0 <= chunk_index < 10**CHUNK_DIGITS:
        raise ValueError(f"chunk index {chunk_index} out of range")
    return f"{video_id}_{chunk_index:0{CHUNK_DIGITS}d}"


def video_of(key: str) -> str:
    """The video id of a sample key (the part before `_<chunk:05d>`)."""
    return key.rsplit("_", 1)[0]


def clip_suffix(view: str) -> str:
    return f"{view}.{CLIP_EXT}"


def kpt_suffix(view: str) -> str:
    return f"{view}.{KPT_EXT}"


def label_ids(labels: list[str]) -> dict[str, int]:
    """The manifest's vocabulary is sorted; a label's id is its position."""
    return {label: i for i, label in enumerate(labels)}


@dataclasses.dataclass(frozen=True, kw_only=True)
class Segment:
    """One timeline segment clipped to a chunk. `start`/`end` are chunk-local, `[start, end)`."""

    label: str
    start: int
    end: int
    global_start: int  # source frame index of `start`
    global_end: int
    segment_id: int  # position of the segment in the source video's timeline
    truncated_start: bool  # the source segment begins before this chunk
    truncated_end: bool  # the source segment ends after this chunk


def timeline_to_json(segments: list[Segment]) -> dict[str, Any]:
    return {"segments": [dataclasses.asdict(s) for s in segments]}


def timeline_from_json(obj: Any) -> list[Segment]:
    if not isinstance(obj, dict) or not isinstance(obj.get("segments"), list):
        raise ValueError("timeline.json must be an object with a 'segments' list")
    return [_typed(Segment, s) for s in obj["segments"]]


@dataclasses.dataclass(frozen=True, kw_only=True)
class SampleEntry:
    """One sample as the manifest lists it, enough to plan epochs without opening a shard."""

    key: str
    offset: int  # byte offset of the sample's first tar header inside the shard
    size: int  # bytes of the sample's tar records (headers + padded data)
    nframes: int  # frames in the chunk
    nsegments: int  # timeline segments intersecting the chunk (segment-mode items)


@dataclasses.dataclass(frozen=True, kw_only=True)
class ShardEntry:
    """One shard. `url`/`nsamples`/`filesize` are the wids shard-index fields."""

    url: str  # relative to the manifest
    nsamples: int
    nsegments: int
    nframes: int
    filesize: int
    sha256: str
    samples: list[SampleEntry]


@dataclasses.dataclass(frozen=True, kw_only=True)
class Manifest:
    """index.json: a wids shard index plus the vidshard dataset description."""

    views: list[str]
    fps: float | None  # the one frame rate of every video, None when they differ
    max_video_frames: int | None  # None: one chunk per video
    overlap: int
    labels: list[str]  # sorted vocabulary; label id = position
    totals: dict[str, int]  # videos, chunks, segments, frames, shards, bytes
    encoder: dict[str, Any]  # codec settings and library versions that made the clips
    keypoints: dict[str, Any]  # "<kind>.<array>" -> {"shape": per-frame shape, "dtype"}; {} if none
    skipped: int  # videos skipped under --on-error skip (listed in errors.json)
    config: dict[str, Any]  # the writer settings that produced these bytes
    shards: list[ShardEntry]

    def to_json(self) -> dict[str, Any]:
        return {
            "__kind__": WIDS_KIND,
            "wids_version": 1,
            "name": FORMAT_NAME,
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "views": self.views,
            "fps": self.fps,
            "max_video_frames": self.max_video_frames,
            "overlap": self.overlap,
            "labels": self.labels,
            "totals": self.totals,
            "encoder": self.encoder,
            "keypoints": self.keypoints,
            "skipped": self.skipped,
            "config": self.config,
            "shardlist": [dataclasses.asdict(s) for s in self.shards],
        }

    @classmethod
    def from_json(cls, obj: Any) -> Manifest:
        if not isinstance(obj, dict) or obj.get("format") != FORMAT_NAME:
            raise ValueError("not a vidshard index.json (missing \"format\": \"vidshard\")")
        if obj.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"unsupported format_version {obj.get('format_version')!r}")
        shards = []
        for s in _typed_list(obj, "shardlist"):
            samples = [_typed(SampleEntry, x) for x in _typed_list(s, "samples")]
            shards.append(_typed(ShardEntry, {**s, "samples": samples}))
        fields = {f.name for f in dataclasses.fields(cls)} - {"shards"}
        return cls(**{k: obj[k] for k in fields}, shards=shards)


def sha256_of(f: IO[bytes]) -> tuple[int, str]:
    """(bytes, sha256 hex) of an open binary file: the `filesize`/`sha256` of a shard entry."""
    digest, size = hashlib.sha256(), 0
    for block in iter(lambda: f.read(1 << 20), b""):
        digest.update(block)
        size += len(block)
    return size, digest.hexdigest()


def dumps(obj: Any) -> bytes:
    """Canonical JSON bytes: sorted keys, fixed separators -> byte-identical reruns."""
    return (json.dumps(obj, sort_keys=True, indent=1, ensure_ascii=False) + "\n").encode()


# Field annotations are strings here (postponed evaluation); only scalars are checked.
_SCALARS = {"int": int, "str": str, "bool": bool}


def _typed(cls: type, obj: Any) -> Any:
    """Build a dataclass from JSON, checking field presence and scalar types."""
    if not isinstance(obj, dict):
        raise ValueError(f"{cls.__name__}: expected an object, got {type(obj).__name__}")
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name not in obj:
            raise ValueError(f"{cls.__name__}: missing field {f.name!r}")
        value = obj[f.name]
        want = _SCALARS.get(f.type)
        if want is not None and (not isinstance(value, want) or (want is int and isinstance(value, bool))):
            raise ValueError(f"{cls.__name__}.{f.name}: expected {f.type}, got {value!r}")
        kwargs[f.name] = value
    return cls(**kwargs)


def _typed_list(obj: dict, name: str) -> list:
    value = obj.get(name)
    if not isinstance(value, list):
        raise ValueError(f"field {name!r} must be a list")
    return value
