"""`vidshard inspect` and `vidshard ls`: what a dataset holds, from index.json and the small
JSON members only. Tar headers are walked with seeks; clips and keypoints are never read.
Shards are read as the reader reads them (vidshard/tools/reading.py): a damaged shard or a
hostile JSON member is a ShardFormatError naming shard, key and member.
"""

from __future__ import annotations

import collections
from collections.abc import Iterator
from typing import Any

from tqdm import tqdm

from streaming.errors import SampleError, ShardFormatError
from streaming.format import META, TIMELINE, Segment, ShardEntry
from streaming.shards import resolve_source

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
    manifest, urls = resolve_source(source)
    labels: dict[str, dict[str, int]] = {name: {"segments": 0, "frames": 0} for name in manifest.labels}
    seen_segments: dict[tuple[str, int], tuple[int, int, str]] = {}
    lengths: collections.Counter = collections.Counter()
    clipped = truncated = 0
    kpt_frames: collections.Counter = collections.Counter()
    chunk_frames = 0
    video_seconds: dict[str, float] = {}
    for _, meta, segments in sample_jsons(urls, manifest.shards):
        n = meta["end_frame"] - meta["start_frame"]
        lengths[n] += 1
        chunk_frames += n
        video_seconds[meta["video_id"]] = meta["video_frames"] / meta["fps"]
        for view, count in meta.get("keypoint_frames", {}).items():
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
        "shards": [{"url": s.url, "samples": s.nsamples, "segments": s.nsegments, "frames": s.nframes,
                    "bytes": s.filesize, "sha256": s.sha256} for s in manifest.shards],
    }


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
        manifest, urls = resolve_source(source)
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
        raise KeyError(f"no sample {key!r} in {source}")
