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
import math
import re
from fractions import Fraction
from typing import IO, Any

import numpy as np

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


@dataclasses.dataclass(frozen=True, kw_only=True)
class Limits:
    """Bounds the reader applies to untrusted shards (docs/security.md), and the writer to
    what it writes (shardwriter/limits.py): a dataset `vidshard write` accepts reads under them."""

    max_member_bytes: int = 2 * 1024**3  # one member (a clip of a long chunk at high resolution fits)
    max_json_bytes: int = 16 * 1024**2  # meta.json / timeline.json
    max_frame_pixels: int = 8192 * 8192  # width x height of one decoded frame
    max_item_bytes: int = 32 * 1024**3  # V x T x 3 x H x W of one decoded item
    max_chunk_frames: int = 1_000_000  # frames of one chunk (index.json's nframes): bounds every frame index array
    max_segments: int = 100_000  # timeline segments of one chunk
    max_epoch_items: int = 100_000_000  # items of one epoch (index.json's counts): each is several int64s in every worker's plan
    # index.json, read whole before parsing: it takes about 220 bytes per sample, so 1 GiB
    # lists about 4.5M samples; parsed, JSON takes many times its bytes in Python objects.
    max_index_bytes: int = 1024**3


def check_views(views: tuple[str, ...], where: str = "--views") -> None:
    """ValueError naming `where` when a view cannot name a tar member or is listed twice."""
    if not views:
        raise ValueError(f"{where} names no view")
    for view in views:
        if not SAFE_NAME.fullmatch(view) or view in RESERVED_VIEWS:
            raise ValueError(
                f"{where}: {view!r} cannot name a tar member: use letters, digits, '_' or '-' "
                f"(no dots), at most 64 characters, not one of {sorted(RESERVED_VIEWS)}"
            )
    if len(set(views)) != len(views):
        raise ValueError(f"{where} lists a view twice: {','.join(views)}")


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


def chunk_start(key: str, max_video_frames: int | None, overlap: int) -> tuple[int, int]:
    """(chunk index, first frame) a sample key names, for a dataset of these settings: chunk i
    of a video starts at i * (max_video_frames - overlap) (shardwriter.plan.chunk_plan).
    ValueError for a key without a chunk number."""
    chunk = key.rsplit("_", 1)[-1]
    if "_" not in key or not chunk.isdigit():
        raise ValueError(f"sample key {key!r} does not end in _<chunk number>")
    index = int(chunk)
    return index, index * (max_video_frames - overlap) if max_video_frames else 0


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
    # [[label, frames], ...]: each of those segments in timeline order, its label and the chunk
    # frames it covers (item labels without opening a shard).
    segments: list


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
            shown = "has no format_version" if "format_version" not in obj else \
                f"has format_version {_shown(obj['format_version'])}"
            raise ValueError(f"index.json {shown}: this reader reads "
                             f"format_version {FORMAT_VERSION} only (write the dataset again with this vidshard, or read "
                             "it with the vidshard that wrote it)")
        shards = []
        names: dict[str, str] = {}  # one str object per distinct label, however many segments carry it
        for s in _typed_list(obj, "shardlist"):
            samples = [_shared_labels(_typed(SampleEntry, x), names) for x in _typed_list(s, "samples")]
            shards.append(_typed(ShardEntry, {**s, "samples": samples}))
        fields = {f.name for f in dataclasses.fields(cls)} - {"shards"}
        missing = sorted(f for f in fields if f not in obj)
        if missing:
            raise ValueError(f"index.json lacks the field(s) {missing}")
        manifest = cls(**{k: obj[k] for k in fields}, shards=shards)
        check_manifest(manifest)
        return manifest


# index.json is untrusted input (docs/security.md): its shard URLs become paths and URLs,
# its digests cache file names, its counts array sizes. Everything is checked on load.
SHA256_HEX = re.compile(r"[0-9a-f]{64}")
# A relative path inside the dataset's folder: segments never start with '.', so no '..'.
SHARD_URL = re.compile(r"(?:[A-Za-z0-9_][A-Za-z0-9_.-]{0,254}/){0,8}[A-Za-z0-9_][A-Za-z0-9_.-]{0,254}\.tar")
SAMPLE_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,254}")
# Array names are only compared with zip entry names, never used as paths: any short printable name.
KPT_ARRAY = re.compile(r"[^\x00-\x1f/]{1,255}")
# The numpy types torch.from_numpy takes (items deliver keypoints as tensors): bool, ints,
# floats, complex. Never "O" (pickled objects); strings, bytes and voids (a structured array
# reads back as one) could be parsed but never delivered, so index.json may not name them.
KPT_DTYPE = re.compile(r"[<>|=](b1|i[1248]|u[1248]|f[248]|c8|c16)")


def check_manifest(m: Manifest) -> None:
    """ValueError naming the field (and shard and sample) of anything index.json may not say."""
    _check(isinstance(m.views, list) and m.views and len(set(m.views)) == len(m.views)
           and all(isinstance(v, str) and SAFE_NAME.fullmatch(v) and v not in RESERVED_VIEWS for v in m.views),
           "views", m.views, "a list of distinct view names ([A-Za-z0-9_-], not reserved)")
    _check(isinstance(m.labels, list) and all(isinstance(x, str) for x in m.labels), "labels", m.labels, "a list of strings")
    _check(isinstance(m.keypoints, dict), "keypoints", m.keypoints, "an object")
    for name, info in m.keypoints.items():
        ok = isinstance(info, dict) and isinstance(info.get("shape"), list) and isinstance(info.get("dtype"), str)
        ok = ok and all(isinstance(d, int) and not isinstance(d, bool) and 0 <= d < 2**31 for d in info["shape"])
        _check(ok and KPT_ARRAY.fullmatch(name) is not None and name != "mask" and KPT_DTYPE.fullmatch(info["dtype"]) is not None,
               f"keypoints[{name!r}]", info, 'an array name with {"shape": [non-negative ints], "dtype": a fixed-size numpy type}')
    for field in ("totals", "encoder", "config"):
        _check(isinstance(getattr(m, field), dict), field, getattr(m, field), "an object")
    mvf = m.max_video_frames
    _check(mvf is None or (isinstance(mvf, int) and not isinstance(mvf, bool) and mvf >= 1), "max_video_frames", mvf,
           "null or an integer >= 1")
    _check(isinstance(m.overlap, int) and not isinstance(m.overlap, bool) and 0 <= m.overlap < (mvf or 1), "overlap", m.overlap,
           "an integer in [0, max_video_frames), 0 without chunking")
    vocabulary = set(m.labels)
    # Dataset-wide: a shard listed twice (or two entries of the same bytes) would deliver its
    # samples twice per epoch, and a key's place (chunk_start) must name one sample.
    urls: set[str] = set()
    digests: set[str] = set()
    keys: set[str] = set()
    for i, s in enumerate(m.shards):
        where = f"shardlist[{i}]"
        _check(SHARD_URL.fullmatch(s.url) is not None, f"{where}.url", s.url,
               "a relative path to a .tar inside the dataset's folder (no '..', no leading '/', no scheme)")
        _check(SHA256_HEX.fullmatch(s.sha256) is not None, f"{where}.sha256", s.sha256, "64 lowercase hex digits")
        _check(s.url not in urls, f"{where}.url", s.url, "a shard listed once (this url is listed before)")
        _check(s.sha256 not in digests, f"{where}.sha256", s.sha256, "a shard listed once (another entry has this sha256)")
        urls.add(s.url)
        digests.add(s.sha256)
        _check(s.filesize >= 0 and s.nsamples == len(s.samples), f"{where}.nsamples", s.nsamples,
               f"the number of samples listed ({len(s.samples)})")
        _check(s.nframes == sum(e.nframes for e in s.samples) and s.nsegments == sum(e.nsegments for e in s.samples),
               f"{where}.nframes/nsegments", (s.nframes, s.nsegments), "the sums over its samples")
        end = 0
        for j, e in enumerate(s.samples):
            at = f"{where}.samples[{j}]"
            _check(SAMPLE_KEY.fullmatch(e.key) is not None and e.key not in keys, f"{at}.key", e.key,
                   "a sample key distinct across the dataset")
            keys.add(e.key)
            _check(mvf is None or e.nframes <= mvf, f"{at}.nframes", e.nframes, f"at most max_video_frames ({mvf})")
            _check(end <= e.offset and 0 < e.size and e.offset + e.size <= s.filesize, f"{at}.offset/size", (e.offset, e.size),
                   f"a byte range after the previous sample's (ending at {end}) and inside the shard's {s.filesize} bytes")
            _check(e.nframes >= 1 and e.nsegments >= 0, f"{at}.nframes/nsegments", (e.nframes, e.nsegments), "nframes >= 1, nsegments >= 0")
            _check(_segments_ok(e, vocabulary), f"{at}.segments", e.segments,
                   f"{e.nsegments} [label, frames] pairs: labels of the vocabulary, frames >= 1, {e.nframes} frames in all at most")
            end = e.offset + e.size


def _segments_ok(e: SampleEntry, vocabulary: set[str]) -> bool:
    segments = e.segments
    if not isinstance(segments, list) or len(segments) != e.nsegments:
        return False
    total = 0
    for pair in segments:
        if not (isinstance(pair, list) and len(pair) == 2 and isinstance(pair[0], str) and pair[0] in vocabulary
                and isinstance(pair[1], int) and not isinstance(pair[1], bool) and pair[1] >= 1):
            return False
        total += pair[1]
    return total <= e.nframes  # segments are disjoint inside the chunk


def _shared_labels(entry: SampleEntry, names: dict[str, str]) -> SampleEntry:
    """The entry with its segment labels replaced by one shared str per label (checked later)."""
    if isinstance(entry.segments, list):
        for pair in entry.segments:
            if isinstance(pair, list) and pair and isinstance(pair[0], str):
                pair[0] = names.setdefault(pair[0], pair[0])
    return entry


def _shown(value: Any, limit: int = 40) -> str:
    """repr(value), cut to about `limit` characters with an ellipsis that says so (a hostile
    index.json may put a megabyte where a number belongs)."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def _check(ok: Any, field: str, value: Any, want: str) -> None:
    if not ok:
        shown = repr(value)
        raise ValueError(f"index.json field {field} is {shown[:200]}, expected {want}")


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


# Numbers from meta.json/timeline.json become int64 tensors and float frame times: a hostile
# 10**19 would raise OverflowError deep in numpy or PyAV, so the reader bounds them (and the
# writer refuses a source outside them).
MAX_INT = 2**53
MIN_FPS, MAX_FPS = Fraction(1, 10**6), Fraction(10**6)


# A kpt.npz, as the writer makes it and the reader bounds it (streaming/npz.py): one .npy per
# schema array of a chunk's frames, and the per-frame `mask`.
MASK = "mask"
ENTRY_OVERHEAD = 4096  # zip local + central headers (zip64 extras) and the .npy header of one array


def expected_arrays(schema: dict, nframes: int) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Entry name -> (shape, dtype) of a chunk of `nframes` frames, from index.json's schema."""
    arrays = {f"{name}.npy": ((nframes, *info["shape"]), np.dtype(info["dtype"])) for name, info in schema.items()}
    arrays[f"{MASK}.npy"] = ((nframes,), np.dtype(bool))
    return arrays


def npz_bound(schema: dict, nframes: int) -> int:
    """The most bytes a valid archive of these arrays takes (stored, or deflated: deflate
    adds at most 5 bytes per 16 KiB block to data it cannot compress)."""
    data = sum(math.prod(shape) * dtype.itemsize for shape, dtype in expected_arrays(schema, nframes).values())
    return data + data // 1024 + ENTRY_OVERHEAD * (len(schema) + 2)
