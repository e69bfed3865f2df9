"""Hand-made hostile shards and index.json files for the hostile-shard corpus
(test_hostile.py): each builder breaks a copy of a written dataset in one way, as a hostile
or buggy writer would, and returns the key of the sample it broke."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import struct
import tarfile
import zipfile
import zlib

from ..helpers import members_of, rebuild_shard

GiB = 1 << 30


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


def zip_of(entries, method: int = zipfile.ZIP_DEFLATED, flags: int = 0) -> bytes:
    """A zip built by hand: (name, payload, declared uncompressed size), deflated entries."""
    body, central = b"", b""
    for name, payload, size in entries:
        n = name.encode()
        central += struct.pack("<4s6H3L5H2L", b"PK\x01\x02", 20, 20, flags, method, 0, 0, 0, len(payload), size, len(n), 0, 0, 0, 0,
                               0, len(body)) + n
        body += struct.pack("<4s5H3L2H", b"PK\x03\x04", 20, flags, method, 0, 0, 0, len(payload), size, len(n), 0) + n + payload
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


# 1 GiB of zeros as one bzip2 stream of 785 bytes: bz2.compress(bytes(1 << 30), 9), stored
# here because making it takes 10 s. zipfile decompresses a bzip2 chunk whole before it
# truncates it to the entry's declared size.
BZIP2_GIB_OF_ZEROS = base64.b64decode(
    "QlpoOTFBWSZTWQ4J4t8BX45AAMAAAAggADCATUZCoCWpCoCXMUFZJlNZDgni3wFfjkAAwAAACCAAMIBNRkKgJakKgJcxQVkmU1kO"
    "CeLfAV+OQADAAAAIIAAwgE1GQqAlqQqAlzFBWSZTWQ4J4t8BX45AAMAAAAggADCATUZCoCWpCoCXMUFZJlNZDgni3wFfjkAAwAAA"
    "CCAAMIBNRkKgJakKgJcxQVkmU1kOCeLfAV+OQADAAAAIIAAwgE1GQqAlqQqAlzFBWSZTWQ4J4t8BX45AAMAAAAggADCATUZCoCWp"
    "CoCXMUFZJlNZDgni3wFfjkAAwAAACCAAMIBNRkKgJakKgJcxQVkmU1kOCeLfAV+OQADAAAAIIAAwgE1GQqAlqQqAlzFBWSZTWQ4J"
    "4t8BX45AAMAAAAggADCATUZCoCWpCoCXMUFZJlNZDgni3wFfjkAAwAAACCAAMIBNRkKgJakKgJcxQVkmU1kOCeLfAV+OQADAAAAI"
    "IAAwgE1GQqAlqQqAlzFBWSZTWQ4J4t8BX45AAMAAAAggADCATUZCoCWpCoCXMUFZJlNZDgni3wFfjkAAwAAACCAAMIBNRkKgJakK"
    "gJcxQVkmU1kOCeLfAV+OQADAAAAIIAAwgE1GQqAlqQqAlzFBWSZTWQ4J4t8BX45AAMAAAAggADCATUZCoCWpCoCXMUFZJlNZDgni"
    "3wFfjkAAwAAACCAAMIBNRkKgJakKgJcxQVkmU1kOCeLfAV+OQADAAAAIIAAwgE1GQqAlqQqAlzFBWSZTWQ4J4t8BX45AAMAAAAgg"
    "ADCATUZCoCWpCoCXMUFZJlNZDgni3wFfjkAAwAAACCAAMIBNRkKgJakKgJcxQVkmU1kOCeLfAV+OQADAAAAIIAAwgE1GQqAlqQqA"
    "lzFBWSZTWQ4J4t8BX45AAMAAAAggADCATUZCoCWpCoCXMUFZJlNZDgni3wFfjkAAwAAACCAAMIBNRkKgJakKgJcxQVkmU1lIfF/J"
    "AIpSyADAAAAEAAggADDMBSmmkSJDYUSJDxdyRThQkPaI5AI="
)


def bzip2_bomb(key, data):
    """The schema's arrays, each a 785-byte bzip2 stream of 1 GiB declaring 4 KiB."""
    names = ("mask.npy", "sam3d_body.frame.npy", "sam3d_body.joints_2d.npy")
    return zip_of([(name, BZIP2_GIB_OF_ZEROS, 4096) for name in names], method=zipfile.ZIP_BZIP2)


def encrypted_entries(key, data):
    """The archive's entries flagged encrypted: zipfile asks for a password (RuntimeError)."""
    names = ("mask.npy", "sam3d_body.frame.npy", "sam3d_body.joints_2d.npy")
    return zip_of([(name, zeros_deflated(1, 1 << 12), 4096) for name in names], flags=0x1)


def meta_with(**changes):
    def change(key, data):
        meta = json.loads(data)
        meta.update(changes)
        return json.dumps(meta).encode()
    return change


def meta_start_frame_1e19(key, data):
    """A frame range of the right length, starting past int64 (frame_index is an int64 tensor)."""
    meta = json.loads(data)
    meta["start_frame"], meta["end_frame"] = 10**19, 10**19 + meta["end_frame"] - meta["start_frame"]
    return json.dumps(meta).encode()


def meta_view_height_infinity(key, data):
    meta = json.loads(data)
    meta["view_sizes"]["front"]["height"] = float("inf")  # json writes (and reads) Infinity
    return json.dumps(meta).encode()


MANY_SEGMENTS = 30  # the most index.json's `segments` let a 30-frame sample list: one per frame


def many_segments(path: str) -> str:
    """30 segments, each over all of the first sample's 30 frames, each one of its
    segment-mode items (index.json agrees on their number and labels: one frame each)."""
    def change(key, data):
        timeline = json.loads(data)
        first = timeline["segments"][0]
        timeline["segments"] = [{**first, "start": 0, "end": 30} for _ in range(MANY_SEGMENTS)]
        return json.dumps(timeline).encode()

    def agree(index):
        set_sample("nsegments", MANY_SEGMENTS)(index)
        sample = index["shardlist"][0]["samples"][0]
        sample["segments"] = [[sample["segments"][0][0], 1] for _ in range(MANY_SEGMENTS)]

    key = change_first(path, replace("timeline.json", change))
    edit_index(path, agree)
    return key


def meta_views_8192_squared(key, data):
    """Every view 8192 x 8192: 3 views x 30 frames is an 18 GiB item, under max_item_bytes (32
    GiB), which a worker should never fill: the clips say 64 x 48."""
    meta = json.loads(data)
    meta["view_sizes"] = {view: {"height": 8192, "width": 8192} for view in meta["view_sizes"]}
    return json.dumps(meta).encode()


def timeline_segment_moved_back(key, data):
    """The second segment moved 3 frames earlier, same label and length: it overlaps the first
    (index.json's [label, frames] pairs still agree)."""
    timeline = json.loads(data)
    second = timeline["segments"][1]
    second["start"] -= 3
    second["end"] -= 3
    return json.dumps(timeline).encode()


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


def prepend_to_first(path: str, raw: bytes) -> str:
    """Put tar records in front of the first sample of shard 0, inside its byte range
    (spliced as bytes: tarfile itself cannot read these back to rebuild the shard)."""
    index = json.load(open(os.path.join(path, "index.json")))
    entry = index["shardlist"][0]
    shard = os.path.join(path, entry["url"])
    data = raw + open(shard, "rb").read()
    open(shard, "wb").write(data)
    for i, s in enumerate(entry["samples"]):
        s["size" if i == 0 else "offset"] += len(raw)
    entry["filesize"], entry["sha256"] = len(data), hashlib.sha256(data).hexdigest()
    json.dump(index, open(os.path.join(path, "index.json"), "w"))
    return entry["samples"][0]["key"]


def pax_sparse_map_not_numbers(path: str) -> str:
    """A pax header whose GNU.sparse.map is not numbers: tarfile's int() raises ValueError."""
    info = tarfile.TarInfo(f"{first_key(path)}.extra.json")
    info.size, info.pax_headers = 2, {"GNU.sparse.map": "a,b", "GNU.sparse.size": "2"}
    return prepend_to_first(path, info.tobuf(tarfile.PAX_FORMAT) + b"{}" + bytes(510))


def long_name_chain(path: str) -> str:
    """3000 GNU long-name records in a row (3 MB): tarfile recurses once per record."""
    name = f"{first_key(path)}.meta.json".encode() + b"\0"
    info = tarfile.TarInfo("././@LongLink")
    info.type, info.size = tarfile.GNUTYPE_LONGNAME, len(name)
    record = info.tobuf(tarfile.GNU_FORMAT) + name + bytes(-len(name) % 512)
    return prepend_to_first(path, record * 3000)


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


def samples_of_25_segments(index):
    """The first shard as 2,000 samples of 25 one-frame segments each: 50,000 segment items."""
    entry, label = index["shardlist"][0], index["labels"][0]
    entry["samples"] = [dict(key=f"v_{i:05d}", offset=i * 1024, size=1024, nframes=25, nsegments=25,
                             segments=[[label, 1]] * 25) for i in range(2000)]
    entry.update(nsamples=2000, nframes=2000 * 25, nsegments=2000 * 25, filesize=2000 * 1024)


def set_keypoint_dtype(index):
    index["keypoints"]["sam3d_body.frame"]["dtype"] = "|O"


def unchunked(change):
    """`change` on an index.json of a dataset written with one chunk per video."""
    def edit(index):
        index["max_video_frames"], index["overlap"] = None, 0
        change(index)
    return edit


def shard_listed_twice(index):
    """The first shard's entry again at the end: every sample of it twice per epoch."""
    index["shardlist"].append(json.loads(json.dumps(index["shardlist"][0])))


def shard_copied_under_another_name(index):
    """The first shard's entry again under another url: same bytes, same keys."""
    shard_listed_twice(index)
    index["shardlist"][-1]["url"] = "copy-of-shard-000000.tar"


def key_in_two_shards(index):
    """A key of the first shard named again in the second (with its own bytes)."""
    index["shardlist"][1]["samples"][0]["key"] = index["shardlist"][0]["samples"][0]["key"]
