"""`vidshard verify OUTPUT|URL [--decode]`: every shard against index.json, every sample's
members and JSON fields (timeline.json's labels against index.json's), every sample's offset and size (they must frame exactly that
sample's tar records, PAX headers of long names included: a reader fetches a sample by
that byte range), and with --decode every clip decoded whole by the reader's decoder, each
frame checked against meta.json (streaming/decode.py). Exit 0 only if all hold.
"""

from __future__ import annotations

import tarfile

import numpy as np
from tqdm import tqdm

from streaming.decode import ClipDecoder
from streaming.errors import KeypointError, SampleError, ShardReadError
from streaming.format import clip_suffix, kpt_suffix, sha256_of
from streaming.items import check_clip, parse_sample
from streaming.npz import read_keypoints
from streaming.options import ReadOptions, open_source
from streaming.remote import redact
from streaming.tario import Limits, Span, iter_samples

from .reading import open_whole


def verify(source: str, decode: bool = False, limits: Limits = Limits()) -> tuple[list[str], dict[str, int]]:
    """(problems, counts). Each problem names the shard and, where it applies, key and member."""
    # The reader's own view of the dataset: its options give parse_sample index.json's chunking,
    # labels and limits, so verify refuses exactly what the reader refuses.
    src = open_source(source, ReadOptions(limits=limits))
    manifest, urls = src.manifest, src.urls
    problems: list[str] = []
    counts = {"shards": 0, "samples": 0, "clips_decoded": 0}
    decoder = ClipDecoder()
    for shard, full_url in tqdm(list(zip(manifest.shards, urls)), desc="verify", unit="shard", disable=None):
        counts["shards"] += 1
        url = redact(full_url)  # every message below names the shard without user:password@ or signatures
        try:
            problems += _check_shard(full_url, url, shard, src, decoder, decode, limits, counts)
        except ShardReadError as exc:  # missing, forbidden, or unreadable after the reader's retries
            problems.append(f"{url}: missing" if "not found" in exc.message or "FileNotFoundError" in exc.message
                            else str(exc))
    return problems, counts


def _check_shard(full_url, url, shard, src, decoder, decode, limits, counts) -> list[str]:
    """One shard, read three times through the reader's read path (tools/reading.py): its
    size and sha256, its samples, its framing."""
    problems: list[str] = []
    with open_whole(full_url) as (f, _):
        size, sha = sha256_of(f)
    if size != shard.filesize:
        problems.append(f"{url}: {size} bytes, index.json says {shard.filesize}")
    if sha != shard.sha256:
        problems.append(f"{url}: sha256 {sha[:16]}..., index.json says {shard.sha256[:16]}...")
    expected = iter(shard.samples)
    try:
        with open_whole(full_url) as (f, size):
            for sample in iter_samples(Span(f, size, url), url, limits):
                entry = next(expected, None)
                counts["samples"] += 1
                if entry is None or sample["__key__"] != entry.key:
                    problems.append(f"{url}: sample {sample['__key__']!r} where index.json lists {entry and entry.key!r}")
                    continue
                problems += _check_sample(sample, entry, url, src, decoder, decode, counts)
    except SampleError as exc:
        problems.append(str(exc))
    left = [e.key for e in expected]
    if left:
        problems.append(f"{url}: {len(left)} sample(s) listed in index.json are missing, from {left[0]!r}")
    with open_whole(full_url) as (f, size):
        problems += _check_framing(Span(f, size, url), url, shard.samples)
    return problems


def _check_framing(f, url: str, entries) -> list[str]:
    """Each sample's [offset, offset + size) in index.json must be exactly its members' tar
    records: from its first header (a PAX header included) to the end of its last data block."""
    spans: dict[str, list[int]] = {}
    try:
        with tarfile.open(fileobj=f, mode="r:") as tar:
            for info in tar:
                key = info.name.partition(".")[0]
                end = info.offset_data + -(-info.size // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE
                spans.setdefault(key, [info.offset, end])[1] = end
    except (tarfile.TarError, ValueError, RecursionError) as exc:  # what tarfile raises on hostile headers (streaming.tario)
        return [f"{url}: not a readable tar ({type(exc).__name__}: {exc})"]
    except ShardReadError:
        raise  # the shard could not be read: verify() reports it
    except SampleError as exc:  # a header the Span refuses (a record asking for too much, pointing backwards)
        return [str(exc)]
    problems = []
    for entry in entries:
        span = spans.get(entry.key)
        if span is not None and span != [entry.offset, entry.offset + entry.size]:
            problems.append(f"{url} {entry.key}: index.json frames bytes [{entry.offset}, {entry.offset + entry.size}), "
                            f"its members are at [{span[0]}, {span[1]})")
    return problems


def _check_sample(sample, entry, url, src, decoder, decode, counts) -> list[str]:
    """The sample as the reader checks it (`streaming.items.parse_sample`: meta.json and
    timeline.json against index.json and each other), every view's members, and with `decode`
    every clip decoded whole through the reader's decoder, every frame checked against meta.json."""
    key, where = sample["__key__"], f"{url} {sample['__key__']}"
    try:
        info = parse_sample(sample, entry.nframes, entry.nsegments, src.options, np.random.default_rng(0), url, entry.segments)
    except SampleError as exc:
        return [str(exc)]
    problems = []
    for view in src.manifest.views:
        clip = sample.get(clip_suffix(view))
        if clip is None:
            problems.append(f"{where}: no {clip_suffix(view)}")
        elif decode:
            counts["clips_decoded"] += 1
            try:
                check_clip(decoder, clip, info.meta, view, url, key)
            except SampleError as exc:
                problems.append(str(exc))
        if src.manifest.keypoints:
            problems += _check_keypoints(sample.get(kpt_suffix(view)), entry.nframes, src.manifest.keypoints,
                                         src.options.limits, url, key, view)
    return problems


def _check_keypoints(data, nframes, schema, limits, url, key, view) -> list[str]:
    """The archive read as the reader reads it (streaming/npz.py): every declared size,
    shape and dtype checked against index.json before numpy allocates, never unpickled."""
    if data is None:
        return [f"{url} {key}.{kpt_suffix(view)}: missing"]
    try:
        read_keypoints(data, schema, nframes, slice(None), max_bytes=limits.max_member_bytes, shard=url, key=key, view=view)
    except KeypointError as exc:
        return [str(exc)]
    return []
