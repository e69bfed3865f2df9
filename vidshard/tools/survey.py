"""`vidshard inspect` and `vidshard ls`: what a dataset holds, from index.json and the small
JSON members only. Tar headers are walked with seeks; clips and keypoints are never read.
Shards are read as the reader reads them (vidshard/tools/reading.py): a damaged shard or a
hostile JSON member is a ShardFormatError naming shard, key and member.
"""

from __future__ import annotations

import collections
from collections.abc import Iterator
from typing import Any

import numpy as np
from tqdm import tqdm

from streaming.decode import frames_decoded

from streaming.errors import SampleError, ShardFormatError
from streaming.format import META, TIMELINE, Segment, ShardEntry
from streaming.sampling import uniform
from streaming.options import load_index

from vidshard.errors import NoSuchSample

from .reading import sample_fields, shard_members


def _json_only(suffix: str) -> bool:
    return suffix in (META, TIMELINE)


def shard_samples(url: str, listed: list[str] | None = None) -> Iterator[tuple[str, list[tuple[str, int]], dict]]:
    """(key, [(suffix, size)] of every member, the JSON members' bytes) per sample of a shard.
    `listed`: the keys index.json lists for it. tarfile takes a shard cut at a member boundary
    for the archive's end, so a shard holding fewer samples is an error naming the first lost;
    records no member header can be read from belong to the first listed sample."""
    key, members, parts = None, [], {}
    count = 0
    try:
        for k, suffix, size, data in shard_members(url, _json_only):
            if k != key:
                if key is not None:
                    yield key, members, parts
                key, members, parts = k, [], {}
                count += 1
            members.append((suffix, size))
            if data is not None:
                parts[suffix] = data
    except SampleError as exc:
        raise exc.at(key=listed[0] if listed and exc.key is None and key is None else None) from None
    if key is not None:
        yield key, members, parts
    if listed is not None and count < len(listed):
        raise ShardFormatError(f"the shard ends after {count} samples, index.json lists {len(listed)} (truncated?)", shard=url,
                               key=listed[count])


def sample_jsons(urls: list[str], shards: list[ShardEntry], progress: bool = True) -> Iterator[tuple[str, dict, list[Segment]]]:
    """(shard url, meta, timeline segments) of every sample."""
    for url, shard in tqdm(list(zip(urls, shards)), desc="shards", unit="shard", disable=None if progress else True):
        for key, _, parts in shard_samples(url, [s.key for s in shard.samples]):
            yield url, *sample_fields({"__key__": key, **parts}, url)


def survey(source: str) -> dict[str, Any]:
    manifest, urls = load_index(source)
    labels: dict[str, dict[str, int]] = {name: {"segments": 0, "frames": 0} for name in manifest.labels}
    seen_segments: dict[tuple[str, int], tuple[int, int, str]] = {}
    lengths: collections.Counter = collections.Counter()
    clipped = truncated = 0
    kpt_frames: collections.Counter = collections.Counter()
    chunk_frames = 0
    video_seconds: dict[str, float] = {}
    cost = DecodeCost()
    for _, meta, segments in sample_jsons(urls, manifest.shards):
        n = meta["end_frame"] - meta["start_frame"]
        cost.add(n, meta["gop"], segments)
        lengths[n] += 1
        chunk_frames += n
        video_seconds[meta["video_id"]] = meta["video_frames"] / meta["fps"]
        for view, count in meta["keypoint_frames"].items():  # checked by sample_fields
            kpt_frames[view] += count
        for seg in segments:
            clipped += 1
            truncated += seg.truncated_start or seg.truncated_end
            # A source segment cut by chunk boundaries appears in several chunks: join them.
            ident = (meta["video_id"], seg.segment_id)
            lo, hi, _ = seen_segments.get(ident, (seg.global_start, seg.global_end, seg.label))
            seen_segments[ident] = (min(lo, seg.global_start), max(hi, seg.global_end), seg.label)
    for lo, hi, label in seen_segments.values():
        labels.setdefault(label, {"segments": 0, "frames": 0})
        labels[label]["segments"] += 1
        labels[label]["frames"] += hi - lo
    views = manifest.views
    return {
        "source": source,
        "format_version": 1,
        "views": views,
        "max_video_frames": manifest.max_video_frames,
        "overlap": manifest.overlap,
        "totals": {**manifest.totals, "hours": round(sum(video_seconds.values()) / 3600, 4)},
        "labels": labels,
        "chunk_lengths": dict(sorted(lengths.items(), reverse=True)),
        "clipped_segments": clipped,
        "truncated_segments": truncated,
        "keypoint_coverage": (
            {v: round(kpt_frames[v] / chunk_frames, 4) for v in views} if manifest.keypoints and chunk_frames else None
        ),
        "decode_cost": cost.report(),
        "shards": [{"url": s.url, "samples": s.nsamples, "segments": s.nsegments, "frames": s.nframes,
                    "bytes": s.filesize, "sha256": s.sha256} for s in manifest.shards],
    }


class DecodeCost:
    """What the clips' GOP costs segment and clip modes on this dataset: frames decoded per
    frame delivered (`streaming.decode.frames_decoded`, the decoder's own rule), over every
    segment (segment mode) and over every window start of every chunk (clip mode, stride 1),
    for items of `NUM_FRAMES` frames. Chunk mode decodes each frame once."""

    NUM_FRAMES = (8, 16)

    def __init__(self):
        self.gops: set[int] = set()
        self.segment = {n: [0, 0] for n in self.NUM_FRAMES}  # [decoded, delivered]
        self.clip = {n: [0.0, 0] for n in self.NUM_FRAMES}

    def add(self, frames: int, gop: int, segments: list[Segment]) -> None:
        self.gops.add(gop)
        for n in self.NUM_FRAMES:
            for seg in segments:
                wanted = np.unique(uniform(seg.start, seg.end, n))
                self.segment[n][0] += frames_decoded(wanted.tolist(), gop)
                self.segment[n][1] += len(wanted)
            if frames < n:  # the window is the whole chunk (its last frame repeated)
                self.clip[n][0] += frames
                self.clip[n][1] += frames
            else:  # a window at start s decodes from the keyframe before s: s % gop more frames
                starts = frames - n + 1
                offsets = (starts // gop) * (gop * (gop - 1) // 2) + (starts % gop) * (starts % gop - 1) // 2
                self.clip[n][0] += n + offsets / starts
                self.clip[n][1] += n

    def report(self) -> dict[str, Any]:
        def ratio(pair) -> float:
            return round(pair[0] / pair[1], 3) if pair[1] else 1.0
        return {"gop": sorted(self.gops), "segment": {n: ratio(p) for n, p in self.segment.items()},
                "clip": {n: ratio(p) for n, p in self.clip.items()}}


def format_survey(report: dict[str, Any], shards: bool = False) -> str:
    t = report["totals"]
    lines = [
        f"{report['source']}: {t['videos']} videos -> {t['chunks']} chunks (max {report['max_video_frames']} frames, "
        f"overlap {report['overlap']}), {t['frames']} frames ({t['hours']:.3f} h), {t['shards']} shards, "
        f"{t['bytes'] / 1e6:.1f} MB, views {', '.join(report['views'])}",
        "",
        f"{'label':<20}{'segments':>10}{'frames':>10}",
    ]
    for label, row in report["labels"].items():
        lines.append(f"{label:<20}{row['segments']:>10}{row['frames']:>10}")
    lines += ["", "chunk lengths: " + ", ".join(f"{n} frames x {c}" for n, c in report["chunk_lengths"].items())]
    share = report["truncated_segments"] / report["clipped_segments"] if report["clipped_segments"] else 0
    lines.append(f"segments cut by chunk boundaries: {report['truncated_segments']} of {report['clipped_segments']} "
                 f"chunk segments ({share:.1%})")
    c = report["decode_cost"]
    if c["gop"]:
        lines.append(f"GOP {', '.join(map(str, c['gop']))}: frames decoded per frame delivered at this dataset's lengths: segment "
                     f"mode {', '.join(f'{r:.2f} ({n} frames)' for n, r in c['segment'].items())}; clip mode "
                     f"{', '.join(f'{r:.2f} ({n} frames)' for n, r in c['clip'].items())}; chunk mode 1.00")
    cov = report["keypoint_coverage"]
    lines.append("keypoints: " + ("none" if cov is None else ", ".join(f"{v} {c:.1%} of frames" for v, c in cov.items())))
    if shards:
        lines += ["", f"{'shard':<22}{'samples':>8}{'segments':>9}{'frames':>8}{'MB':>9}  sha256"]
        for s in report["shards"]:
            lines.append(f"{s['url']:<22}{s['samples']:>8}{s['segments']:>9}{s['frames']:>8}{s['bytes'] / 1e6:>9.2f}  {s['sha256'][:16]}")
    return "\n".join(lines)


def listing(source: str, key: str | None = None) -> Iterator[str]:
    """Like `tar tvf`, grouped by sample, with each sample's video, range and labels: lines
    as the shards are read, so `vidshard ls | head` stops reading early."""
    if source.endswith(".tar"):  # a lone shard, like tar tvf: no index.json needed
        walks = [(source, None)]
    else:
        manifest, urls = load_index(source)
        walks = [(url, [s.key for s in shard.samples]) for url, shard in zip(urls, manifest.shards)]
    found = False
    for url, listed in walks:
        for k, members, parts in shard_samples(url, listed):
            if key is not None and k != key:
                continue
            found = True
            meta, segs = sample_fields({"__key__": k, **parts}, url)
            labels = " ".join(s.label + ("<" if s.truncated_start else "") + (">" if s.truncated_end else "") for s in segs)
            yield (f"{url.rsplit('/', 1)[-1]}  {k}  video {meta['video_id']} frames "
                   f"[{meta['start_frame']}, {meta['end_frame']})  segments: {labels or '-'}")
            yield from (f"    {size:>10}  {k}.{suffix}" for suffix, size in members)
    if key is not None and not found:
        raise NoSuchSample(f"no sample {key!r} in {source}")
