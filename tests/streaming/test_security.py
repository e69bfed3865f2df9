"""Untrusted shards are data: one test per hostile case, each a typed error naming the shard
(and the member or key), and a pickle payload that must never run."""

from __future__ import annotations

import io
import json
import os
import pickle
import shutil
import tarfile

import numpy as np
import pytest

from vidshard.cli import main
from streaming import VideoShardDataset
from streaming.errors import DecodeError, KeypointError, ShardFormatError
from streaming.remote import StorageOptions
from streaming.tario import Limits, iter_samples

from ..helpers import members_of, rebuild_shard
from ..servers import upload, use_endpoint


@pytest.fixture
def copy(small_dataset, tmp_path):
    dst = str(tmp_path / "ds")
    shutil.copytree(small_dataset, dst)
    return dst


def tar_bytes(entries) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for info, data in entries:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def reg(name, data=b"x"):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def special(name, kind, target=""):
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info, None


def read_all(raw: bytes, limits=Limits()):
    return list(iter_samples(io.BytesIO(raw), "s.tar", limits))


@pytest.mark.parametrize(
    "entries, reason",
    [
        ([reg("/etc/passwd.json")], "not <key>.<suffix>"),
        ([reg("../escape.meta.json")], "not <key>.<suffix>"),
        ([reg("a/../../b.meta.json")], "not <key>.<suffix>"),
        ([special("k.front.mp4", tarfile.SYMTYPE, "/etc/shadow")], "is a symlink"),
        ([reg("k.meta.json"), special("k.left.mp4", tarfile.LNKTYPE, "k.meta.json")], "is a hardlink"),
        ([special("k.front.mp4", tarfile.CHRTYPE)], "is a device file"),
        ([special("k.front.mp4", tarfile.DIRTYPE)], "is a directory"),
        ([reg("a.meta.json"), reg("b.meta.json"), reg("a.timeline.json")], "not adjacent"),
        ([reg("a.meta.json"), reg("a.meta.json")], "duplicate member"),
    ],
)
def test_hostile_members_are_typed_errors(entries, reason):
    with pytest.raises(ShardFormatError, match=reason) as info:
        read_all(tar_bytes(entries))
    assert info.value.shard == "s.tar"


def test_member_size_limit_checked_from_the_header():
    raw = tar_bytes([reg("k.front.mp4", b"\0" * 5000)])
    with pytest.raises(ShardFormatError, match="declares 5000 bytes, over the limit of 4096"):
        read_all(raw, Limits(max_member_bytes=4096))


def test_truncated_tar_is_a_typed_error():
    raw = tar_bytes([reg("k.front.mp4", b"\1" * 5000), reg("k.meta.json", b"{}")])
    with pytest.raises(ShardFormatError, match="not a readable tar"):
        read_all(raw[:3000])


def test_truncated_shard_through_the_dataset(copy):
    path = os.path.join(copy, "shard-000000.tar")
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)
    with pytest.raises(ShardFormatError) as info:
        list(VideoShardDataset(copy, shuffle=False))
    assert info.value.shard.endswith("shard-000000.tar")


def test_garbage_after_the_end_is_never_read_but_verify_reports_it(copy, capsys):
    with open(os.path.join(copy, "shard-000000.tar"), "ab") as f:
        f.write(os.urandom(4096))
    assert len(list(VideoShardDataset(copy, load_rgb=False, load_kpt=True))) == 9  # tolerated: outside every range
    assert main(["verify", copy]) == 1
    assert "index.json says" in capsys.readouterr().out


def mutate_first(change):
    def mutate(samples):
        first = next(iter(samples))
        change(samples[first])
        return members_of(samples)
    return mutate


@pytest.mark.parametrize(
    "change, error, reason",
    [
        (lambda s: s.__setitem__("meta.json", json.dumps({"start_frame": "0"}).encode()), ShardFormatError, "wrong type"),
        (lambda s: s.__setitem__("meta.json", b"\xff not json"), ShardFormatError, "not valid JSON"),
        (lambda s: s.__setitem__("timeline.json", json.dumps({"segments": [{"label": 3}]}).encode()), ShardFormatError, "timeline.json"),
        (lambda s: s.__setitem__("meta.json", _meta_with(s, end_frame=lambda m: m["end_frame"] + 5)), ShardFormatError,
         "give 35 frames / 5 segments, index.json says 30 / 5"),
        (lambda s: s.__setitem__("meta.json", _meta_with(s, view_sizes=lambda m: {v: {"width": 80, "height": 48} for v in m["views"]})),
         DecodeError, r"clip header disagrees with meta.json: width 64 \(meta.json: 80\)"),
        (lambda s: s.__setitem__("meta.json", _meta_with(s, view_sizes=lambda m: {v: {"width": 100000, "height": 100000} for v in m["views"]})),
         ShardFormatError, "outside the limit"),
    ],
)
def test_bad_sample_content_is_a_typed_error(copy, change, error, reason):
    rebuild_shard(copy, mutate_first(change))
    with pytest.raises(error, match=reason) as info:
        list(VideoShardDataset(copy, shuffle=False))
    assert info.value.key and info.value.shard.endswith(".tar")


def _meta_with(sample, **changes):
    meta = json.loads(sample["meta.json"])
    for field, fn in changes.items():
        meta[field] = fn(meta)
    return json.dumps(meta).encode()


@pytest.mark.parametrize("arrays, reason", [
    ({"evil": np.array([{"a": 1}], dtype=object)}, r"arrays \['evil.npy', 'mask.npy'\] differ from index.json's schema"),
    ({"sam3d_body.frame": np.array([{"a": 1}] * 30, dtype=object), "sam3d_body.joints_2d": np.zeros((30, 17, 2), "<f4")},
     "holds Python objects"),
])
def test_npz_with_object_arrays_is_refused(copy, arrays, reason):
    def change(sample):
        buf = io.BytesIO()
        np.savez(buf, mask=np.ones(30, bool), **arrays)
        sample["front.kpt.npz"] = buf.getvalue()

    rebuild_shard(copy, mutate_first(change))
    with pytest.raises(KeypointError, match=reason) as info:
        list(VideoShardDataset(copy, shuffle=False, load_rgb=False, load_kpt=True))
    assert info.value.view == "front" and info.value.key and info.value.member.endswith(".front.kpt.npz")


class _Payload:
    """Unpickling this creates a file: the proof that something unpickled shard content."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.mark.parametrize("ext", ["pyd", "pickle", "pkl", "pth", "pt", "npy"])
def test_pickle_payload_is_never_executed(copy, tmp_path, ext):
    marker = tmp_path / f"pwned-{ext}"
    payload = pickle.dumps(_Payload(str(marker)))

    def mutate(samples):
        for parts in samples.values():
            parts[f"payload.{ext}"] = payload
            parts[f"front.{ext}"] = payload
        return members_of(samples)

    rebuild_shard(copy, mutate)
    items = list(VideoShardDataset(copy, load_kpt=True, img_size=(16, 16)))
    assert len(items) == 9 and not any(k.endswith(ext) for i in items for k in i)
    assert main(["verify", copy, "--decode"]) == 0  # extra members are ignored, never decoded
    assert main(["inspect", copy]) == 0 and main(["ls", copy]) == 0
    assert not marker.exists()


def _read_index(path: str) -> int:
    from streaming.remote import StorageOptions
    from streaming.shards import read_bytes

    return len(read_bytes(path, StorageOptions(), max_bytes=1 << 30))


def test_a_small_index_json_is_read_without_reserving_the_limit(copy):
    """The bound is on what is read, not what is reserved: f.read(limit + 1) asked for 1 GiB of
    address space for every index.json (a MemoryError under `ulimit -v` or in this sandbox)."""
    from .sandbox import isolated

    outcome = isolated(_read_index, os.path.join(copy, "index.json"))
    assert outcome.kind == "ok" and outcome.value == os.path.getsize(os.path.join(copy, "index.json")), outcome
    assert outcome.reserved < 64 << 20, outcome


def test_index_json_over_the_limit_is_refused_before_it_is_read(copy):
    """index.json is read whole before it is parsed: one larger than Limits.max_index_bytes
    is refused by its size, naming the file, its size and the limit, in both datasets."""
    from streaming import VideoShardMapDataset

    index = os.path.join(copy, "index.json")
    size = os.path.getsize(index)
    for cls in (VideoShardDataset, VideoShardMapDataset):
        with pytest.raises(ValueError, match=rf"{index}: {size} bytes, over the limit of {size - 1} bytes .*max_index_bytes"):
            cls(copy, sample="chunk", limits=Limits(max_index_bytes=size - 1))
        assert len(cls(copy, sample="chunk", limits=Limits(max_index_bytes=size))) > 0


def _open_endless_index(path: str, limit: int) -> str:
    try:
        VideoShardDataset(path, sample="chunk", limits=Limits(max_index_bytes=limit))
    except ValueError as exc:
        return str(exc)
    return "loaded"


ENDLESS_LIMIT = 256 << 20


def test_index_json_without_a_size_is_read_with_a_bound(tmp_path):
    """A file whose size the system does not give (here /dev/zero: st_size 0, endless) is
    read to at most the limit + 1 bytes, held once, then refused: the bound is on the bytes
    held (a list of pieces joined at the end held them twice: 2 GB under a 1 GiB limit)."""
    from .sandbox import isolated

    os.symlink("/dev/zero", tmp_path / "index.json")
    outcome = isolated(_open_endless_index, str(tmp_path), ENDLESS_LIMIT, timeout=30)
    assert outcome.kind == "ok", outcome
    assert outcome.value == f"{tmp_path}/index.json: more than {ENDLESS_LIMIT} bytes, over the limit of {ENDLESS_LIMIT} bytes " \
                            "(streaming.tario.Limits.max_index_bytes)"
    assert outcome.grown < ENDLESS_LIMIT * 1.25, outcome.grown >> 20


def test_index_json_of_an_endless_http_body_is_read_with_a_bound():
    """An HTTP server that sends index.json without a Content-Length and never ends it: read
    to the limit + 1 bytes, held once, refused naming the URL."""
    from ..servers import EndlessServer
    from .sandbox import isolated

    with EndlessServer() as server:
        url = f"http://127.0.0.1:{server.port}/ds"
        outcome = isolated(_open_endless_index, url, ENDLESS_LIMIT, timeout=60)
    assert outcome.kind == "ok", outcome
    assert outcome.value.startswith(f"{url}/index.json: more than {ENDLESS_LIMIT} bytes, over the limit"), outcome.value
    assert outcome.grown < ENDLESS_LIMIT * 1.25, outcome.grown >> 20


def test_redact_strips_url_secrets_but_keeps_sample_keys():
    """The CLI redacts every error message: a SampleError's `key=<sample key>` stays readable."""
    from streaming.errors import KeypointError
    from streaming.remote import redact

    err = str(KeypointError("bad", shard="s3://b/shard-000000.tar", key="session_000_00001", view="front"))
    assert redact(err) == err and "key=session_000_00001" in err
    assert redact("https://u:pw@h/x.tar?key=S1&sig=S2&token=S3&X-Amz-Signature=S4") == \
        "https://***@h/x.tar?key=***&sig=***&token=***&X-Amz-Signature=***"
    loose = redact("aws_secret_access_key=S5 secret_key=S6 api-key=S7 session_token=S8 password=S9 token=S10 "
                   "https://h/x?apiKey=S11&SecretKey=S12 DefaultEndpointsProtocol=https;AccountName=a;AccountKey=S13; "
                   "https://h/x;key=S14 sig=S15")
    assert not any(f"S{i}" in loose for i in range(5, 16)), loose
    header = redact("AWS4-HMAC-SHA256 Credential=AKIA/x, SignedHeaders=host, Signature=abc123")
    assert "AKIA" not in header and "abc123" not in header


_FAST = StorageOptions(block_bytes=16 * 1024, backoff_s=0.01, max_backoff_s=0.05, retries=30, timeout_s=1)


def test_s3_index_json_over_the_limit_is_refused(small_dataset, s3_server, monkeypatch):
    """index.json over Limits.max_index_bytes on S3: refused by the object's size before it
    is read; where the size is not known first, by reading at most the limit + 1 bytes."""
    from streaming.ranges import RangeReader
    from streaming.tario import Limits

    upload(small_dataset, "bigindex", s3_server)
    use_endpoint(s3_server)
    size = os.path.getsize(os.path.join(small_dataset, "index.json"))
    url = "s3://vidshard/bigindex/index.json"
    with pytest.raises(ValueError, match=rf"{url}: {size} bytes, over the limit of {size - 1} bytes"):
        VideoShardDataset("s3://vidshard/bigindex/", storage=_FAST, limits=Limits(max_index_bytes=size - 1))
    assert len(VideoShardDataset("s3://vidshard/bigindex/", storage=_FAST, limits=Limits(max_index_bytes=size))) > 0
    monkeypatch.setattr(RangeReader, "size", lambda self: None)
    got, get = [], RangeReader._get
    monkeypatch.setattr(RangeReader, "_get", lambda self, *args: got.append(get(self, *args)) or got[-1])
    with pytest.raises(ValueError, match=rf"{url}: more than {size - 101} bytes, over the limit of {size - 101} bytes"):
        VideoShardDataset("s3://vidshard/bigindex/", storage=_FAST, limits=Limits(max_index_bytes=size - 101))
    assert [len(b) for b in got] == [size - 100]  # the limit + 1 bytes, never the whole file
    assert len(VideoShardDataset("s3://vidshard/bigindex/", storage=_FAST, limits=Limits(max_index_bytes=size))) > 0
