"""The hostile-shard corpus: one hand-made bad shard (or index.json) per failure, each run in a
forked child that the parent kills after 10 s and that may grow by at most 1 GiB
(tests/streaming/sandbox.py). Every case must end in a typed error naming shard, key and
member (on_error="raise") or in logged, counted skips with len(ds) items (on_error="skip");
never a MemoryError, a hang, or an untyped error."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import zlib

import pytest

from streaming import VideoShardDataset
from streaming.format import Limits

from ..helpers import members_of, rebuild_shard
from .hostile_shards import (
    GiB, MANY_SEGMENTS, bzip2_bomb, change_first, deflate_bomb, edit_index, encrypted_entries, insert_middle, long_name_chain,
    long_name_first, many_segments, meta_start_frame_1e19, meta_view_height_infinity, meta_views_8192_squared, meta_with,
    npz_declaring_huge_shape, pax_sparse_map_not_numbers, rename_members, replace, samples_of_25_segments, set_first,
    set_keypoint_dtype,
    set_sample, shard_copied_under_another_name, shard_listed_twice, key_in_two_shards, symlink, timeline_segment_moved_back,
    timeline_span, unchunked, zip_declaring_1gib, zip_of,
)
from .sandbox import isolated
from .test_claims import CLAIM_CASES


def epoch(path: str, policy: str, kwargs: dict) -> dict:
    """One epoch in the child: what the parent checks."""
    records: list[str] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: records.append(record.getMessage())
    logging.getLogger("vidshard").addHandler(handler)
    ds = VideoShardDataset(path, on_error=policy, **kwargs)
    keys = [item["meta"]["key"] for item in ds]
    return {"items": len(keys), "len": len(ds), "skipped": ds.state_dict()["skipped"], "log": records,
            "keys": sorted(set(keys))}


# (id, how to break the copy -> the broken key, dataset options, error class, reason, member pattern, skip reason)
KPT = {"load_rgb": False, "load_kpt": True}
SAMPLE_CASES = [
    ("path-member", lambda p: change_first(p, insert_middle(lambda k: (f"../../{k}.meta.json", b"{}"))), KPT,
     "ShardFormatError", r"not <key>\.<suffix>", r"^\.\./\.\./.*\.meta\.json$", "format"),
    ("symlink-member", lambda p: change_first(p, insert_middle(symlink)), KPT,
     "ShardFormatError", "is a symlink", r"\.link\.json$", "format"),
    ("npz-header-declares-1e12", lambda p: change_first(p, replace("front.kpt.npz", npz_declaring_huge_shape)), KPT,
     "KeypointError", r"declares shape \(1000000000000,\)", r"\.front\.kpt\.npz$", "keypoints"),
    ("deflate-bomb", lambda p: change_first(p, replace("front.kpt.npz", deflate_bomb)), KPT,
     "ShardFormatError", r"declares \d+ bytes, over the limit of \d+", r"\.front\.kpt\.npz$", "format"),
    ("zip-entry-declares-1GiB", lambda p: change_first(p, replace("front.kpt.npz", zip_declaring_1gib)), KPT,
     "KeypointError", r"declares 1073741824 bytes uncompressed", r"\.front\.kpt\.npz$", "keypoints"),
    ("npz-bzip2-bomb", lambda p: change_first(p, replace("front.kpt.npz", bzip2_bomb)), KPT,
     "KeypointError", r"\.npy: compression method 12 is not read", r"\.front\.kpt\.npz$", "keypoints"),
    ("npz-encrypted-entries", lambda p: change_first(p, replace("front.kpt.npz", encrypted_entries)), KPT,
     "KeypointError", r"compression method 8 \(encrypted\) is not read", r"\.front\.kpt\.npz$", "keypoints"),
    ("meta-end-frame-1e13", lambda p: change_first(p, replace("meta.json", meta_with(end_frame=10**13))), KPT,
     "ShardFormatError", "index.json says 30", r"\.meta\.json$", "format"),
    ("meta-start-frame-1e19", lambda p: change_first(p, replace("meta.json", meta_start_frame_1e19)), KPT,
     "ShardFormatError", "frame range, gop or chunk_index out of bounds", r"\.meta\.json$", "format"),
    ("meta-view-height-infinity", lambda p: change_first(p, replace("meta.json", meta_view_height_infinity)), {"img_size": (16, 16)},
     "ShardFormatError", "no view_sizes for 'front'", r"\.meta\.json$", "format"),
    # An 18 GiB item under max_item_bytes: the allocation is granted lazily (no cap here), the
    # clips' headers (64x48) refute meta.json before a frame is decoded into it.
    ("meta-views-8192-squared", lambda p: change_first(p, replace("meta.json", meta_views_8192_squared)), {},
     "DecodeError", r"clip header disagrees with meta.json: height 48 \(meta.json: 8192\), width 64", r"\.front\.mp4$", "decode"),
    ("meta-fps-1e400", lambda p: change_first(p, replace("meta.json", meta_with(fps_rational="1e400"))), {"img_size": (16, 16)},
     "ShardFormatError", r"fps_rational '1e400' is not a frame rate", r"\.meta\.json$", "format"),
    ("json-nested-deep", lambda p: change_first(p, replace("meta.json", lambda k, d: b"[" * 200_000 + b"]" * 200_000)), KPT,
     "ShardFormatError", "not valid JSON .RecursionError", r"\.meta\.json$", "format"),
    ("timeline-segment-1e12", lambda p: change_first(p, replace("timeline.json", timeline_span)), {"sample": "segment", **KPT},
     "ShardFormatError", r"is not inside the chunk", r"\.timeline\.json$", "format"),
    ("timeline-segment-overlapping-its-neighbour", lambda p: change_first(p, replace("timeline.json", timeline_segment_moved_back)),
     {"sample": "segment", **KPT}, "ShardFormatError", r"timeline segments overlap or are out of order", r"\.timeline\.json$",
     "format"),
    ("other-key-in-range", lambda p: change_first(p, rename_members), KPT,
     "ShardFormatError", "found sample 'intruder_00000' in the byte range", None, "format"),
    ("long-name-record-of-1GiB", long_name_first, KPT,
     "ShardFormatError", r"a tar record asks to read 1073741824 bytes", None, "format"),
    ("pax-sparse-map-not-numbers", pax_sparse_map_not_numbers, KPT,
     "ShardFormatError", r"not a readable tar \(ValueError", None, "format"),
    ("long-name-chain-of-3000", long_name_chain, KPT,
     "ShardFormatError", r"not a readable tar \(RecursionError", None, "format"),
    ("broken-clip", lambda p: change_first(p, replace("front.mp4", lambda k, d: b"\xff" * len(d))), {"img_size": (16, 16)},
     "DecodeError", "clip does not decode", r"\.front\.mp4$", "decode"),
    # meta.json against its clips (tests/streaming/test_claims.py proves the frames from pixels)
    *CLAIM_CASES,
]


@pytest.fixture
def copy(small_dataset, tmp_path):
    dst = str(tmp_path / "ds")
    shutil.copytree(small_dataset, dst)
    return dst


@pytest.mark.parametrize("case", SAMPLE_CASES, ids=[c[0] for c in SAMPLE_CASES])
def test_hostile_sample_is_a_typed_error_or_a_logged_skip(copy, case):
    _, breaks, kwargs, error, reason, member, skip_reason = case
    key = breaks(copy)
    raised = isolated(epoch, copy, "raise", kwargs)
    assert raised.kind == "typed", raised
    assert raised.error == error and re.search(reason, raised.message), raised.message
    assert raised.fields["shard"].endswith("shard-000000.tar") and raised.fields["key"] == key, raised.fields
    if member:
        assert re.search(member, raised.fields["member"] or ""), raised.fields
    skipped = isolated(epoch, copy, "skip", kwargs)
    assert skipped.kind == "ok", skipped
    result = skipped.value
    assert result["items"] == result["len"] and key not in result["keys"]  # replaced, so the rank is whole
    assert sum(result["skipped"].values()) >= 1 and set(result["skipped"]) == {skip_reason}
    assert any(key in line and "shard-000000.tar" in line for line in result["log"]), result["log"]
    for outcome in (raised, skipped):
        assert outcome.seconds < 10 and outcome.grown < GiB


@pytest.mark.parametrize("case", SAMPLE_CASES, ids=[c[0] for c in SAMPLE_CASES])
def test_verify_decode_reports_every_sample_the_reader_refuses(copy, case):
    """`vidshard verify --decode` holds shards to what the reader accepts: each case is a
    problem naming the shard (and the key, where the sample's own bytes name it)."""
    from vidshard.tools.verify import verify

    _, breaks, _, _, _, member, _ = case
    key = breaks(copy)
    outcome = isolated(verify, copy, True, timeout=30)
    assert outcome.kind == "ok", outcome
    problems, _ = outcome.value
    assert [p for p in problems if "shard-000000.tar" in p and (member is None or key in p)], problems
    assert outcome.grown < GiB, outcome


def truncate_shard(path):
    shard = os.path.join(path, "shard-000000.tar")
    with open(shard, "r+b") as f:
        f.truncate(os.path.getsize(shard) // 2)


def test_truncated_shard_skips_each_sample_past_the_cut(copy):
    truncate_shard(copy)
    raised = isolated(epoch, copy, "raise", KPT)
    assert raised.kind == "typed" and raised.error == "ShardFormatError" and raised.fields["key"], raised
    skipped = isolated(epoch, copy, "skip", KPT)
    assert skipped.kind == "ok" and skipped.value["items"] == skipped.value["len"] == 9, skipped
    assert skipped.value["skipped"]["format"] >= 1 and len(skipped.value["keys"]) == 9 - skipped.value["skipped"]["format"]


def test_missing_shard_is_a_read_error_per_sample(copy):
    os.remove(os.path.join(copy, "shard-000001.tar"))
    lost = len(json.load(open(os.path.join(copy, "index.json")))["shardlist"][1]["samples"])
    raised = isolated(epoch, copy, "raise", KPT)
    assert raised.kind == "typed" and raised.error == "ShardReadError" and "cannot open the shard" in raised.message, raised
    skipped = isolated(epoch, copy, "skip", KPT)
    assert skipped.kind == "ok" and skipped.value["items"] == 9 and skipped.value["skipped"] == {"read": lost}, skipped


INDEX_CASES = [
    ("sha256-relative-path", set_first("sha256", "../escaped"), r"shardlist\[0\]\.sha256 is '\.\./escaped', expected 64 lowercase hex"),
    ("sha256-absolute-path", set_first("sha256", "/tmp/escaped"), r"shardlist\[0\]\.sha256"),
    ("url-parent", set_first("url", "../shard-000000.tar"), r"shardlist\[0\]\.url is '\.\./shard-000000\.tar', expected a relative path"),
    ("url-absolute", set_first("url", "/etc/passwd.tar"), r"shardlist\[0\]\.url"),
    ("url-other-host", set_first("url", "http://evil.example/x.tar"), r"shardlist\[0\]\.url"),
    ("url-dotdot-inside", set_first("url", "a/../../x.tar"), r"shardlist\[0\]\.url"),
    ("offset-past-the-end", set_sample("offset", 10**12), r"shardlist\[0\]\.samples\[0\]\.offset/size"),
    ("nframes-1e13", unchunked(set_sample("nframes", 10**13)), r"10000000000000 frames .* over the limits"),
    ("nframes-over-max-video-frames", set_sample("nframes", 31), r"samples\[0\]\.nframes is 31, expected at most max_video_frames \(30\)"),
    ("shard-listed-twice", shard_listed_twice, r"shardlist\[3\]\.url is 'shard-000000\.tar', expected a shard listed once"),
    ("shard-copied-under-another-name", shard_copied_under_another_name, r"shardlist\[3\]\.sha256 .* expected a shard listed once"),
    ("key-in-two-shards", key_in_two_shards, r"shardlist\[1\]\.samples\[0\]\.key .* distinct across the dataset"),
    ("nsegments-1e12-labelled", set_sample("nsegments", 10**12),
     r"shardlist\[0\]\.samples\[0\]\.segments is .* expected 1000000000000 \[label, frames\] pairs"),
    ("keypoint-dtype-object", set_keypoint_dtype, r"keypoints\['sam3d_body\.frame'\]"),
]


def construct(path: str, kwargs: dict) -> int:
    return len(VideoShardDataset(path, **kwargs))


@pytest.mark.parametrize("case", INDEX_CASES, ids=[c[0] for c in INDEX_CASES])
def test_hostile_index_is_refused_on_load(copy, tmp_path, case):
    _, change, reason = case
    edit_index(copy, change)
    outcome = isolated(construct, copy, {"cache_dir": str(tmp_path / "cache"), "on_error": "skip"})
    assert outcome.kind == "error" and outcome.error == "DatasetRefused" and re.search(reason, outcome.message), outcome
    assert outcome.seconds < 10 and outcome.grown < GiB
    assert not any(name.endswith(".tar") for name in os.listdir(tmp_path) + os.listdir(os.path.dirname(copy)))


def test_a_hostile_keypoint_schema_cannot_size_the_reads(copy):
    """index.json is untrusted too: a schema declaring 2**27 values per frame (32 GiB for the
    chunk) lifted the kpt.npz member limit and sized the read of a 1 MB deflate bomb that
    expands to 1 GiB. The schema's size is bounded by max_member_bytes before anything is read."""
    def huge_schema(index):
        index["keypoints"]["sam3d_body.frame"]["shape"] = [2**27]

    edit_index(copy, huge_schema)
    nframes = json.load(open(os.path.join(copy, "index.json")))["shardlist"][0]["samples"][0]["nframes"]

    def bomb(key, data):
        header = f"{{'descr': '<i8', 'fortran_order': False, 'shape': ({nframes}, {2**27}), }}".encode()
        c = zlib.compressobj(9, zlib.DEFLATED, -15)
        head = c.compress(b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header) + c.flush(zlib.Z_FULL_FLUSH)
        zeros = c.compress(bytes(1 << 24)) + c.flush(zlib.Z_FULL_FLUSH)
        payload = head + zeros * 64 + b"\x03\x00"  # the header, then 1 GiB of zeros
        names = ("sam3d_body.frame.npy", "sam3d_body.joints_2d.npy", "mask.npy")
        return zip_of([(name, payload, GiB) for name in names])

    key = change_first(copy, replace("front.kpt.npz", bomb))
    raised = isolated(epoch, copy, "raise", {**KPT, "shuffle": False})  # the bomb is read first
    assert raised.kind == "typed" and raised.error == "KeypointError", raised
    assert re.search(r"keypoint schema implies \d+ bytes for \d+ frames, over the limit", raised.message), raised.message
    assert raised.fields["key"] == key and raised.seconds < 10 and raised.peak_rss < GiB


def test_index_counts_cannot_size_an_epoch_plan_past_memory(copy):
    """Every sample under max_segments, but more items in all than Limits.max_epoch_items
    (each is several int64s in every worker's epoch plan): refused on load (it was a
    MemoryError when a worker planned its epoch). index.json lists each segment's label, one
    frame at least each, so the items here are 2,000 samples x 25 segments, under a lowered
    limit; the default limit bounds 10**8 items the same way."""
    edit_index(copy, samples_of_25_segments)

    def first_item(path):
        return next(iter(VideoShardDataset(path, sample="segment", num_frames=1, on_error="skip",
                                           limits=Limits(max_epoch_items=49_999))))

    outcome = isolated(first_item, copy)
    assert outcome.kind == "error" and outcome.error == "DatasetRefused", outcome
    assert re.search(r"lists \d+ items for an epoch, over the limit of 49999", outcome.message), outcome.message
    assert outcome.seconds < 10 and outcome.peak_rss < GiB


def test_overlapping_segments_are_refused_before_they_cost_items_squared(copy):
    """Segments over one sample's frames, all of them items (index.json agrees): each item's
    frame labels took a pass over every segment (5,000 segments were 25 million passes, when
    index.json could leave their labels out). Timelines are sorted and disjoint (as the
    writer makes them): refused at once. With "skip" the sample's items are still owed
    repeats."""
    key = many_segments(copy)
    kwargs = {"sample": "segment", "num_frames": 2, **KPT}
    raised = isolated(epoch, copy, "raise", kwargs)
    assert raised.kind == "typed" and raised.error == "ShardFormatError", raised
    assert "segments overlap or are out of order" in raised.message and raised.fields["key"] == key
    assert raised.fields["member"].endswith(".timeline.json") and raised.seconds < 10
    skipped = isolated(epoch, copy, "skip", kwargs, timeout=120)
    assert skipped.kind == "ok" and skipped.value["items"] == skipped.value["len"], skipped
    assert skipped.value["skipped"] == {"format": MANY_SEGMENTS} and key not in skipped.value["keys"]


def test_meta_json_extras_are_not_held_with_the_window(copy):
    """Each sample of shard 0 gets a meta.json with an extra field of 3 MB ("[[],[],...]",
    under max_json_bytes): some 75 MB of Python objects once parsed. The window held each
    sample's whole parsed meta.json until the window ended (four of them: +300 MB, and 16 MB
    fields would be +1.5 GB). Only the fields items use are kept: one member's parse at a time."""
    baseline = isolated(epoch, copy, "raise", KPT)
    index = json.load(open(os.path.join(copy, "index.json")))
    keys = {s["key"] for s in index["shardlist"][0]["samples"]}

    def mutate(samples):
        out = []
        for name, data in members_of(samples):
            if name.endswith(".meta.json") and name.split(".")[0] in keys:
                data = (json.dumps(json.loads(data))[:-1] + ', "extra": [' + "[]," * 1_000_000 + "[]]}").encode()
            out.append((name, data))
        return out

    rebuild_shard(copy, mutate)
    outcome = isolated(epoch, copy, "raise", KPT, timeout=60)
    assert baseline.kind == outcome.kind == "ok" and outcome.value["items"] == outcome.value["len"] == 9, outcome
    grew = (outcome.peak_rss - baseline.peak_rss) >> 20
    assert grew < 150, f"peak RSS {grew} MB above the same epoch without the extras"


def test_a_shard_given_twice_is_refused_however_it_is_spelled(copy):
    """Shard URLs selecting a subset: one shard named twice (a//b.tar is a/b.tar) would be read twice per epoch."""
    one = os.path.join(copy, "shard-000000.tar")
    for urls in ([one, one], [one, one.replace("/shard-", "//shard-")]):
        with pytest.raises(ValueError, match=r"shards given more than once: \['shard-000000.tar'\]"):
            VideoShardDataset(urls)


def test_meta_json_cannot_size_an_allocation_its_clip_refutes(copy):
    """Views claimed 8192 x 8192 for 64 x 48 clips (an 18 GiB item): the clip's header is asked
    before the item is allocated, so not even the address space is reserved (in a DataLoader
    worker the item would go to shared memory, where 18 GiB fail with an unrelated error)."""
    key = change_first(copy, replace("meta.json", meta_views_8192_squared))
    raised = isolated(epoch, copy, "raise", {})
    assert raised.kind == "typed" and raised.error == "DecodeError" and raised.fields["key"] == key, raised
    assert raised.reserved < GiB and raised.grown < GiB, (raised.reserved >> 20, raised.grown >> 20)

    def in_workers(path):
        from torch.utils.data import DataLoader

        return sum(1 for _ in DataLoader(VideoShardDataset(path, on_error="skip"), batch_size=None, num_workers=2))

    skipped = isolated(in_workers, copy, timeout=60)
    assert skipped.kind == "ok" and skipped.value == len(VideoShardDataset(copy)), skipped
