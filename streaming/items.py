"""One encoded sample -> the items it yields (chunk, segment or clip mode), decoded.

Stages apart: `ItemSpec`s say which frames each item needs (pure, from the sample's small
JSON members); `build_item` decodes exactly those frames of every view and the keypoints.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
from fractions import Fraction
from typing import Any

import av
import numpy as np
import torch

from .decode import Claims, ClipDecoder, ClipMismatch
from .errors import DecodeError, KeypointError, ShardFormatError
from .format import (
    KPT_EXT, MAX_FPS, MAX_INT, META, MIN_FPS, TIMELINE, Segment, chunk_start, clip_suffix, kpt_suffix, timeline_from_json,
    video_of,
)
from .npz import read_keypoints
from .pool import shared_tensor
from .sampling import chunk_label, clip_window, frame_labels, uniform
from .tario import Limits




@dataclasses.dataclass(frozen=True, kw_only=True)
class ItemSpec:
    frames: np.ndarray  # chunk-local frame indices, in delivery order
    segment: Segment | None  # segment mode: the segment the item samples


@dataclasses.dataclass(frozen=True, kw_only=True)
class Options:
    """The dataset's per-item settings, as one value handed to the item builder."""

    mode: str
    num_frames: int | None
    stride: int
    img_size: tuple[int, int] | None
    views: tuple[str, ...]
    load_rgb: bool
    load_kpt: bool
    label_ids: dict[str, int]
    limits: Limits
    keypoint_schema: dict = dataclasses.field(default_factory=dict)  # index.json's: what each kpt.npz must hold
    chunking: tuple[int | None, int] = (None, 0)  # index.json's (max_video_frames, overlap): where each key's chunk starts


@dataclasses.dataclass(frozen=True, kw_only=True)
class SampleInfo:
    """A sample's parsed JSON members and the items it yields: a value of its own, kept
    beside the sample's bytes (parsed once, whatever the number of items)."""

    meta: dict  # the meta.json fields items use (_META_KEPT, view_sizes of the views read), nothing else
    timeline: list[Segment]
    specs: list[ItemSpec]
    nframes: int  # frames of the chunk, as meta.json and index.json agree
    label_table: np.ndarray  # [segments, 3] int64: start, end, label id (sampling.frame_labels), built once per sample


def parse_json(sample: dict, suffix: str, shard: str) -> Any:
    key = sample["__key__"]
    if suffix not in sample:
        raise ShardFormatError(f"sample has no {suffix} member", shard=shard, key=key, member=f"{key}.{suffix}")
    try:
        return json.loads(sample[suffix])
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:  # RecursionError: nesting a thousand deep
        raise ShardFormatError(f"{suffix} is not valid JSON ({type(exc).__name__}: {str(exc)[:200]})", shard=shard, key=key,
                               member=f"{key}.{suffix}") from None


def sample_meta(sample: dict, shard: str) -> tuple[dict, list[Segment]]:
    meta = parse_json(sample, META, shard)
    key = sample["__key__"]
    if not isinstance(meta, dict):
        raise ShardFormatError("meta.json is not an object", shard=shard, key=key, member=f"{key}.{META}")
    for field, kind in (("start_frame", int), ("end_frame", int), ("gop", int), ("fps_rational", str), ("views", list),
                        ("view_sizes", dict), ("video_id", str), ("chunk_index", int), ("fps", (int, float))):
        if not isinstance(meta.get(field), kind) or isinstance(meta.get(field), bool):
            raise ShardFormatError(f"meta.json field {field!r} missing or of the wrong type ({meta.get(field)!r})", shard=shard, key=key,
                                   member=f"{key}.{META}")
    if not 0 <= meta["start_frame"] < meta["end_frame"] <= MAX_INT or meta["gop"] < 1 or not 0 <= meta["chunk_index"] <= MAX_INT:
        raise ShardFormatError("meta.json frame range, gop or chunk_index out of bounds", shard=shard, key=key, member=f"{key}.{META}")
    try:
        fps = Fraction(meta["fps_rational"])
    except (ValueError, ZeroDivisionError):
        fps = None
    if fps is None or not MIN_FPS <= fps <= MAX_FPS:
        raise ShardFormatError(f"meta.json fps_rational {meta['fps_rational']!r} is not a frame rate in [{MIN_FPS}, {MAX_FPS}]",
                               shard=shard, key=key, member=f"{key}.{META}")
    # meta.json states the rate twice and items carry `fps`: the two must agree. abs() first:
    # an integer past a float's range is an OverflowError in isclose; NaN fails both.
    if not abs(meta["fps"]) <= MAX_FPS or not math.isclose(meta["fps"], fps, rel_tol=1e-9):
        raise ShardFormatError(f"meta.json fps {meta['fps']!r} disagrees with its fps_rational {meta['fps_rational']!r} "
                               f"(= {float(fps):.6g})", shard=shard, key=key, member=f"{key}.{META}")
    try:
        timeline = timeline_from_json(parse_json(sample, TIMELINE, shard))
    except ValueError as exc:
        raise ShardFormatError(f"timeline.json: {exc}", shard=shard, key=key, member=f"{key}.{TIMELINE}") from None
    for s in timeline:
        if not all(-MAX_INT <= v <= MAX_INT for v in (s.start, s.end, s.global_start, s.global_end, s.segment_id)):
            raise ShardFormatError(f"timeline segment {str(s.segment_id)[:30]} has numbers out of bounds", shard=shard, key=key,
                                   member=f"{key}.{TIMELINE}")
    return meta, timeline


def parse_sample(sample: dict, nframes: int, nsegments: int, opts: Options, rng: np.random.Generator, shard: str,
                 segments: list) -> SampleInfo:
    """The sample's metadata, checked against what index.json says of it (`nframes`,
    `nsegments`, `segments`) before any array is sized from it, and the items it yields."""
    key = sample["__key__"]
    if nframes > opts.limits.max_chunk_frames or nsegments > opts.limits.max_segments:
        raise ShardFormatError(f"index.json lists {nframes} frames / {nsegments} segments, over the limits of "
                               f"{opts.limits.max_chunk_frames} / {opts.limits.max_segments}", shard=shard, key=key)
    meta, timeline = sample_meta(sample, shard)
    frames = meta["end_frame"] - meta["start_frame"]
    if frames != nframes or len(timeline) != nsegments:
        raise ShardFormatError(f"meta.json/timeline.json give {frames} frames / {len(timeline)} segments, "
                               f"index.json says {nframes} / {nsegments}", shard=shard, key=key, member=f"{key}.{META}")
    check_place(meta, key, opts.chunking, shard)
    end = 0
    for s in timeline:
        if not 0 <= s.start < s.end <= frames:
            raise ShardFormatError(f"timeline segment {s.segment_id} [{s.start}, {s.end}) is not inside the chunk's "
                                   f"[0, {frames})", shard=shard, key=key, member=f"{key}.{TIMELINE}")
        # Sorted and disjoint, as the writer makes them (shardwriter.plan.check_timeline):
        # so there are at most `frames` of them, and a frame's label is one binary search.
        if s.start < end:
            raise ShardFormatError(f"timeline segments overlap or are out of order (segment {s.segment_id} starts at "
                                   f"{s.start}, before the previous one's end {end})", shard=shard, key=key,
                                   member=f"{key}.{TIMELINE}")
        end = s.end
    check_segments(timeline, segments, shard, key)
    table = np.array([(s.start, s.end, opts.label_ids.get(s.label, -1)) for s in timeline], dtype=np.int64).reshape(-1, 3)
    # Only what items use stays with the window: meta.json may hold anything else, up to
    # max_json_bytes of it, and parsed JSON takes some 25 times its bytes (16 MB of "[],"
    # is 400 MB of lists). The sizes of the views read are checked here, as integers.
    kept = {field: meta[field] for field in _META_KEPT}
    if opts.load_rgb:
        kept["view_sizes"] = {v: dict(zip(("height", "width"), _stored_size(meta, v, shard, key))) for v in opts.views}
    return SampleInfo(meta=kept, timeline=timeline, specs=item_specs(kept, timeline, opts, rng), nframes=frames,
                      label_table=table)


_META_KEPT = ("start_frame", "end_frame", "gop", "fps_rational", "video_id", "chunk_index", "fps")


def check_place(meta: dict, key: str, chunking: tuple[int | None, int], shard: str) -> None:
    """meta.json's video, chunk and first frame must be the ones the key names in a dataset
    of index.json's max_video_frames and overlap: frame_index is start_frame + position, and
    a start_frame no other member can contradict would shift every frame silently."""
    try:
        chunk, start = chunk_start(key, *chunking)
    except ValueError as exc:
        raise ShardFormatError(str(exc), shard=shard, key=key) from None
    if meta.get("key", key) != key:
        raise ShardFormatError(f"meta.json names the sample {str(meta['key'])[:80]!r}", shard=shard, key=key, member=f"{key}.{META}")
    said = (meta["video_id"], meta["chunk_index"], meta["start_frame"])
    if said != (video_of(key), chunk, start):
        raise ShardFormatError(f"meta.json says video {said[0]!r} chunk {said[1]} from frame {said[2]}; the key and index.json "
                               f"(max_video_frames {chunking[0]}, overlap {chunking[1]}) give video {video_of(key)!r} chunk "
                               f"{chunk} from frame {start}", shard=shard, key=key, member=f"{key}.{META}")


def check_segments(timeline: list[Segment], segments: list, shard: str, key: str) -> None:
    """timeline.json must say what index.json's `segments` say (the labels `label_ids` reads)."""
    found = [[s.label, s.end - s.start] for s in timeline]
    if found != [list(pair) for pair in segments]:
        raise ShardFormatError(f"timeline.json's segments (label, frames) {str(found)[:200]} differ from index.json's "
                               f"{str(segments)[:200]}", shard=shard, key=key, member=f"{key}.{TIMELINE}")


def item_specs(meta: dict, timeline: list[Segment], opts: Options, rng: np.random.Generator) -> list[ItemSpec]:
    """Every item the sample yields, in segment order for segment mode."""
    length = meta["end_frame"] - meta["start_frame"]
    if opts.mode == "chunk":
        return [ItemSpec(frames=uniform(0, length, opts.num_frames), segment=None)]
    if opts.mode == "clip":
        return [ItemSpec(frames=clip_window(length, opts.num_frames, opts.stride, rng), segment=None)]
    return [ItemSpec(frames=uniform(s.start, s.end, opts.num_frames), segment=s) for s in timeline]


def build_item(sample: dict, info: SampleInfo, spec: ItemSpec, opts: Options, decoder: ClipDecoder, shard: str) -> dict[str, Any]:
    key = sample["__key__"]
    meta, timeline = info.meta, info.timeline
    frames = spec.frames
    item: dict[str, Any] = {
        "frame_index": torch.from_numpy(frames + meta["start_frame"]),
        "frame_labels": torch.from_numpy(frame_labels(frames, info.label_table)),
    }
    if opts.load_rgb:
        item["video"] = _decode_views(sample, meta, frames, opts, decoder, shard)
    if opts.load_kpt:
        item["keypoints"], item["keypoints_mask"] = _keypoints(sample, frames, info.nframes, opts, shard)
    info = {
        "key": key,
        "shard": shard,
        "video_id": meta.get("video_id"),
        "chunk_index": meta.get("chunk_index"),
        "start_frame": meta["start_frame"],
        "end_frame": meta["end_frame"],
        "fps": meta.get("fps"),
        "views": list(opts.views),
    }
    if spec.segment is None:
        item["timeline"] = [dataclasses.asdict(s) for s in timeline]
        label_id = chunk_label([(opts.label_ids.get(s.label, -1), s.end - s.start) for s in timeline])
        item["label"] = next((s.label for s in timeline if opts.label_ids.get(s.label) == label_id), None)
        item["label_id"] = label_id
    else:
        seg = spec.segment
        item["label"], item["label_id"] = seg.label, opts.label_ids.get(seg.label, -1)
        info.update(segment_id=seg.segment_id, truncated_start=seg.truncated_start, truncated_end=seg.truncated_end)
    item["meta"] = info
    return item


def _item_buffer(shape: tuple[int, ...], decoder: ClipDecoder) -> tuple[torch.Tensor, np.ndarray]:
    """(the item's video tensor, a numpy view of it to decode into). In a DataLoader worker
    (`decoder.shared`) the tensor is made in shared memory: handing the item to the main
    process then sends a handle, not a copy of its pixels. It is one of the worker's slots
    (streaming.pool), lent again only once every process has let go of it; with every slot
    out, fresh shared memory. In-process, the decoder's spare array is reused (ClipDecoder.buffer)."""
    if not decoder.shared:
        array = decoder.buffer(shape)  # MemoryError: the item is more than this node holds
        return torch.from_numpy(array), array
    tensor = shared_tensor(shape, "item", decoder.stats)
    return tensor, tensor.numpy()


def _decode_views(sample: dict, meta: dict, frames: np.ndarray, opts: Options, decoder: ClipDecoder, shard: str) -> torch.Tensor:
    key = sample["__key__"]
    wanted, inverse = np.unique(frames, return_inverse=True)
    decoded = video = None
    for v, view in enumerate(opts.views):
        data = sample.get(clip_suffix(view))
        if data is None:
            raise ShardFormatError(f"sample has no {clip_suffix(view)} member", shard=shard, key=key, view=view,
                                   member=f"{key}.{clip_suffix(view)}")
        stored = _stored_size(meta, view, shard, key)
        size = opts.img_size or stored
        _check_allocation(len(opts.views), len(wanted), stored, size, opts.limits, shard, key, view)
        if decoded is None:
            # The clip's header first: the item is sized from meta.json, which must not size an
            # allocation the clip refutes (18 GiB of views claimed 8192x8192 for 64x48 clips).
            with _clip_errors(shard, key, view):
                decoder.check_header(data, clip_claims(meta, view, shard, key))
            shape = (len(opts.views), len(wanted), 3, *size)
            try:
                video, decoded = _item_buffer(shape, decoder)
            except MemoryError:  # one allocation, refused whole: under the limits, over what this node holds
                raise ShardFormatError(f"cannot allocate the item's {np.prod(shape)} bytes ({'x'.join(map(str, shape))}); "
                                       "lower Limits.max_item_bytes or pass img_size", shard=shard, key=key, view=view,
                                       member=f"{key}.{META}") from None
        elif decoded.shape[-2:] != size:
            raise ShardFormatError(
                f"views differ in size ({decoded.shape[-2:]} vs {size}): pass img_size", shard=shard, key=key, view=view
            )
        with _clip_errors(shard, key, view):
            decoder.decode(data, wanted, clip_claims(meta, view, shard, key), opts.img_size, decoded[v])
    if len(wanted) == len(frames):
        return video
    # Repeated indices: expand once, after decoding each frame once (into shared memory in a worker, as the item is).
    index = torch.from_numpy(inverse.reshape(-1))
    shape = (video.shape[0], len(index), *video.shape[2:])
    out = shared_tensor(shape, "item", decoder.stats) if decoder.shared else torch.empty(shape, dtype=torch.uint8)
    return torch.index_select(video, 1, index, out=out)


def _check_allocation(views, frames, stored, size, limits, shard, key, view) -> None:
    """Refuse sizes an untrusted meta.json could use to exhaust memory, before allocating."""
    if stored[0] * stored[1] > limits.max_frame_pixels or stored[0] < 1 or stored[1] < 1:
        raise ShardFormatError(f"clip size {stored[1]}x{stored[0]} is outside the limit of {limits.max_frame_pixels} pixels",
                               shard=shard, key=key, view=view)
    item = views * frames * 3 * size[0] * size[1]
    if item > limits.max_item_bytes:
        raise ShardFormatError(f"item would take {item} bytes, over the limit of {limits.max_item_bytes}", shard=shard, key=key, view=view)


def check_clip(decoder: ClipDecoder, data: bytes, meta: dict, view: str, shard: str, key: str) -> int:
    """Decode a whole clip, every frame checked against meta.json (`vidshard verify --decode`);
    its frames, or the DecodeError the reader would give."""
    with _clip_errors(shard, key, view):
        return decoder.check(data, clip_claims(meta, view, shard, key))


@contextlib.contextmanager
def _clip_errors(shard: str, key: str, view: str):
    """A clip's failures as the sample's DecodeError naming shard, key, member and view."""
    member = f"{key}.{clip_suffix(view)}"
    try:
        yield
    except ClipMismatch as exc:
        raise DecodeError(str(exc), shard=shard, key=key, view=view, member=member) from None
    # OverflowError, ZeroDivisionError: frame times computed from a hostile container header
    except (EOFError, OSError, ValueError, OverflowError, ZeroDivisionError, av.FFmpegError) as exc:
        raise DecodeError(f"clip does not decode ({exc})", shard=shard, key=key, view=view, member=member) from None


def clip_claims(meta: dict, view: str, shard: str, key: str) -> Claims:
    """What a checked meta.json (sample_meta) says of one view's clip, for the decoder to check."""
    height, width = _stored_size(meta, view, shard, key)
    return Claims(frames=meta["end_frame"] - meta["start_frame"], height=height, width=width,
                  fps=Fraction(meta["fps_rational"]), gop=meta["gop"])


def _stored_size(meta: dict, view: str, shard: str, key: str) -> tuple[int, int]:
    try:
        size = meta["view_sizes"][view]
        return int(size["height"]), int(size["width"])
    except (KeyError, TypeError, ValueError, OverflowError):  # OverflowError: JSON's Infinity
        raise ShardFormatError(f"meta.json has no view_sizes for {view!r} (integer height and width)", shard=shard, key=key, view=view,
                               member=f"{key}.{META}") from None


def _keypoints(sample: dict, frames: np.ndarray, nframes: int, opts: Options, shard: str):
    key = sample["__key__"]
    per_view, masks = [], []
    for view in opts.views:
        data = sample.get(kpt_suffix(view))
        if data is None:
            raise KeypointError(f"sample has no {view}.{KPT_EXT} member (written without keypoints?)", shard=shard, key=key, view=view,
                                member=f"{key}.{kpt_suffix(view)}")
        arrays, mask = read_keypoints(data, opts.keypoint_schema, nframes, frames, max_bytes=opts.limits.max_member_bytes,
                                      shard=shard, key=key, view=view)
        masks.append(mask)
        per_view.append(arrays)
    # Every view's arrays have the schema's shapes and dtypes (checked): they stack.
    keypoints = {name: torch.from_numpy(np.stack([a[name] for a in per_view])) for name in sorted(per_view[0])}
    return keypoints, torch.from_numpy(np.stack(masks))
