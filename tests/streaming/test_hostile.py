"""The hostile-shard corpus: one hand-made bad shard (or index.json) per failure, each run in a
forked child that the parent kills after 10 s and that may grow by at most 1 GiB
(tests/streaming/sandbox.py). Every case must end in a typed error naming shard, key and
member (on_error="raise") or in logged, counted skips with len(ds) items (on_error="skip");
never a MemoryError, a hang, or an untyped error."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import shutil
import struct
import tarfile
import zipfile
import zlib

import pytest

from streaming import VideoShardDataset

from ..helpers import members_of, rebuild_shard
from .sandbox import isolated

GiB = 1 << 30


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


def first_key(path: str, shard: int = 0) -> str:
    return json.load(open(os.path.join(path, "index.json")))["shardlist"][shard]["samples"][0]["key"]


def change_first(path: str, change) -> str:
    """Rewrite the first sample of shard 0 with `change(key, parts) -> members`; its key."""
    def mutate(samples):
        key = next(iter(samples))
        members = members_of(samples)
        mine = [m for m in members if m[0].startswith(key + ".")]
        rest = [m for m in members if not m[0].startswith(key + ".")]
        return change(key, mine) + rest

    key = first_key(path)
    rebuild_shard(path, mutate)
    return key


def insert_middle(member):
    def change(key, mine):
        made = member(key)
        return mine[:1] + [made] + mine[1:]
    return change


def replace(suffix: str, data_of):
    def change(key, mine):
        return [(name, data_of(key, data) if name == f"{key}.{suffix}" else data) for name, data in mine]
    return change


def symlink(key):
    info = tarfile.TarInfo(f"{key}.link.json")
    info.type, info.linkname = tarfile.SYMTYPE, "/etc/shadow"
    return info, b""


def npz_declaring_huge_shape(key, data):
    """About 200 bytes whose mask.npy header declares 10**12 entries."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name in ("mask.npy", "sam3d_body.frame.npy", "sam3d_body.joints_2d.npy"):
            header = "{'descr': '|b1', 'fortran_order': False, 'shape': (1000000000000,), }"
            zf.writestr(name, b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header.encode())
    return buf.getvalue()


def zip_of(entries) -> bytes:
    """A zip built by hand: (name, payload, declared uncompressed size), deflated entries."""
    body, central = b"", b""
    for name, payload, size in entries:
        n = name.encode()
        central += struct.pack("<4s6H3L5H2L", b"PK\x01\x02", 20, 20, 0, 8, 0, 0, 0, len(payload), size, len(n), 0, 0, 0, 0, 0,
                               len(body)) + n
        body += struct.pack("<4s5H3L2H", b"PK\x03\x04", 20, 0, 8, 0, 0, 0, len(payload), size, len(n), 0) + n + payload
    return body + central + struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, len(entries), len(entries), len(central), len(body), 0)


def zeros_deflated(n_chunks: int, chunk: int = 1 << 24) -> bytes:
    """n_chunks x chunk zero bytes as a raw deflate stream (one block, repeated: full flushes
    make each block stand alone), in about 1 KB per 1 MB."""
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = c.compress(bytes(chunk)) + c.flush(zlib.Z_FULL_FLUSH)
    return block * n_chunks + b"\x03\x00"  # an empty final block ends the stream


def deflate_bomb(key, data):
    """1 GiB of zeros in about 1 MB, under the schema's array names."""
    names = ("mask.npy", "sam3d_body.frame.npy", "sam3d_body.joints_2d.npy")
    return zip_of([(name, zeros_deflated(64), GiB) for name in names])


def zip_declaring_1gib(key, data):
    """A small archive whose entries declare 1 GiB uncompressed."""
    names = ("mask.npy", "sam3d_body.frame.npy", "sam3d_body.joints_2d.npy")
    return zip_of([(name, zeros_deflated(1, 1 << 12), GiB) for name in names])


def meta_with(**changes):
    def change(key, data):
        meta = json.loads(data)
        meta.update(changes)
        return json.dumps(meta).encode()
    return change


def timeline_span(key, data):
    timeline = json.loads(data)
    timeline["segments"][0]["end"] = 10**12
    return json.dumps(timeline).encode()


def long_name_header_of_1gib(raw: bytes) -> bytes:
    """Declare 1 GiB of GNU long-name record in the first member's extended header."""
    at = raw.index(b"././@LongLink")
    header = bytearray(raw[at:at + 512])
    header[124:136] = b"%011o\0" % GiB
    header[148:156] = b"        "
    header[148:156] = b"%06o\0 " % sum(header)
    return raw[:at] + bytes(header) + raw[at + 512:]


def rename_members(key, mine):
    return [(name.replace(key, "intruder_00000", 1), data) for name, data in mine]


def long_name_first(path: str) -> str:
    """The first member of the first sample gets a name over 100 bytes (a GNU long-name
    record), whose header is then made to declare 1 GiB."""
    def mutate(samples):
        members = members_of(samples)
        name, data = members[0]
        return [(name.replace(".", "." + "x" * 120 + "-", 1), data)] + members[1:]

    rebuild_shard(path, mutate, tar_format=tarfile.GNU_FORMAT, patch=long_name_header_of_1gib)
    return first_key(path)


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
    ("meta-end-frame-1e13", lambda p: change_first(p, replace("meta.json", meta_with(end_frame=10**13))), KPT,
     "ShardFormatError", "index.json says 30", r"\.meta\.json$", "format"),
    ("json-nested-deep", lambda p: change_first(p, replace("meta.json", lambda k, d: b"[" * 200_000 + b"]" * 200_000)), KPT,
     "ShardFormatError", "not valid JSON .RecursionError", r"\.meta\.json$", "format"),
    ("timeline-segment-1e12", lambda p: change_first(p, replace("timeline.json", timeline_span)), {"sample": "segment", **KPT},
     "ShardFormatError", r"is not inside the chunk", r"\.timeline\.json$", "format"),
    ("other-key-in-range", lambda p: change_first(p, rename_members), KPT,
     "ShardFormatError", "found sample 'intruder_00000' in the byte range", None, "format"),
    ("long-name-record-of-1GiB", long_name_first, KPT,
     "ShardFormatError", r"a tar record asks to read 1073741824 bytes", None, "format"),
    ("broken-clip", lambda p: change_first(p, replace("front.mp4", lambda k, d: b"\xff" * len(d))), {"img_size": (16, 16)},
     "DecodeError", "clip does not decode", r"\.front\.mp4$", "decode"),
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
        assert outcome.seconds < 10 and outcome.peak_rss < GiB


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


def edit_index(path, change):
    index_path = os.path.join(path, "index.json")
    index = json.load(open(index_path))
    change(index)
    json.dump(index, open(index_path, "w"))


def set_first(field, value):
    def change(index):
        index["shardlist"][0][field] = value
    return change


def set_sample(field, value):
    def change(index):
        shard = index["shardlist"][0]
        delta = value - shard["samples"][0][field]
        shard["samples"][0][field] = value
        if field in ("nframes", "nsegments"):
            shard[field] += delta
    return change


def without_segments(change):
    """`change` on an index.json written before samples listed their segments' labels."""
    def edit(index):
        change(index)
        del index["shardlist"][0]["samples"][0]["segments"]
    return edit


def set_keypoint_dtype(index):
    index["keypoints"]["sam3d_body.frame"]["dtype"] = "|O"


INDEX_CASES = [
    ("sha256-relative-path", set_first("sha256", "../escaped"), r"shardlist\[0\]\.sha256 is '\.\./escaped', expected 64 lowercase hex"),
    ("sha256-absolute-path", set_first("sha256", "/tmp/escaped"), r"shardlist\[0\]\.sha256"),
    ("url-parent", set_first("url", "../shard-000000.tar"), r"shardlist\[0\]\.url is '\.\./shard-000000\.tar', expected a relative path"),
    ("url-absolute", set_first("url", "/etc/passwd.tar"), r"shardlist\[0\]\.url"),
    ("url-other-host", set_first("url", "http://evil.example/x.tar"), r"shardlist\[0\]\.url"),
    ("url-dotdot-inside", set_first("url", "a/../../x.tar"), r"shardlist\[0\]\.url"),
    ("offset-past-the-end", set_sample("offset", 10**12), r"shardlist\[0\]\.samples\[0\]\.offset/size"),
    ("nframes-1e13", set_sample("nframes", 10**13), r"10000000000000 frames .* over the limits"),
    ("nsegments-1e12", without_segments(set_sample("nsegments", 10**12)), r"1000000000000 segments for sample .* over the limits"),
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
    assert outcome.kind == "error" and outcome.error == "ValueError" and re.search(reason, outcome.message), outcome
    assert outcome.seconds < 10 and outcome.peak_rss < GiB
    assert not any(name.endswith(".tar") for name in os.listdir(tmp_path) + os.listdir(os.path.dirname(copy)))
