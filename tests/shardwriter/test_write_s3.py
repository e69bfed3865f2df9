"""Writing to object storage (moto's S3 server on loopback): killed and resumed, the objects
are the local run's bytes, nothing partial is listed under a final name, the work area (a
prefix under OUTPUT) is gone at the end, and an upload that fails is aborted."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time

from shardwriter.encode import EncodeSettings
import pytest

from shardwriter.job import WriteConfig, write_dataset
from shardwriter.store import MIN_PART_BYTES, open_store
from streaming import VideoShardDataset

from ..servers import use_endpoint


def digests_s3(prefix: str) -> dict[str, str]:
    """Final names only: the hidden work area is a prefix of its own."""
    import s3fs

    fs = s3fs.S3FileSystem()
    fs.invalidate_cache()
    return {os.path.basename(p): hashlib.sha256(fs.cat_file(p)).hexdigest() for p in sorted(fs.ls(f"vidshard/{prefix}"))
            if not os.path.basename(p).startswith(".")}


def test_write_to_s3_killed_and_resumed_gives_the_same_objects(small_source, small_dataset, s3_server, tmp_path):
    use_endpoint(s3_server)
    config = dict(max_video_frames=30, overlap=6, shard_bytes=150_000)
    cmd = [sys.executable, "-m", "vidshard", "-q", "write", small_source, "s3://vidshard/out", "--max-video-frames", "30",
           "--overlap", "6", "--shard-size", "150000", "--gop", "8", "--workers", "2"]
    env = {**os.environ}
    seen_partial = []
    for delay in (2.0, 3.0):
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        time.sleep(delay)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        listed = digests_s3("out") if _exists("out") else {}
        seen_partial.append("index.json" in listed)
        final = {n: d for n, d in listed.items() if n.endswith(".tar")}
        local = {n: hashlib.sha256(open(os.path.join(small_dataset, n), "rb").read()).hexdigest() for n in final}
        assert final == local  # whatever is listed under a final name is complete
    assert subprocess.run(cmd, env=env, capture_output=True).returncode == 0
    objects = digests_s3("out")
    expected = {n: hashlib.sha256(open(os.path.join(small_dataset, n), "rb").read()).hexdigest() for n in os.listdir(small_dataset)}
    assert objects == expected and not all(seen_partial)
    assert not _exists("out/.vidshard-work")
    ds = VideoShardDataset("s3://vidshard/out", load_rgb=False, load_kpt=True)
    assert len(list(ds)) == 9
    assert write_dataset(small_source, "s3://vidshard/out", WriteConfig(**config, encode=EncodeSettings(gop=8))).chunks == 9


def _exists(prefix: str) -> bool:
    import s3fs

    fs = s3fs.S3FileSystem()
    fs.invalidate_cache()
    return fs.exists(f"vidshard/{prefix}")


def test_failed_upload_is_aborted_and_large_objects_go_in_parts(s3_server):
    import boto3

    use_endpoint(s3_server)
    store = open_store("s3://vidshard/parts")
    part = os.urandom(MIN_PART_BYTES)
    with pytest.raises(RuntimeError):
        with store.create("shard-000000.tar", MIN_PART_BYTES) as f:
            f.write(part)
            f.write(part)  # two parts uploaded: a multipart upload is open
            raise RuntimeError("the task fails mid-shard")
    client = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{s3_server}")
    assert not store.exists("shard-000000.tar")
    assert not client.list_multipart_uploads(Bucket="vidshard").get("Uploads")  # aborted, not left behind
    with store.create("shard-000001.tar", MIN_PART_BYTES) as f:
        for _ in range(3):
            f.write(part)
    head = client.head_object(Bucket="vidshard", Key="parts/shard-000001.tar")
    assert head["ContentLength"] == 3 * MIN_PART_BYTES and head["ETag"].strip('"').endswith("-3")  # 3 parts


def _uploads(client, prefix: str) -> list[str]:
    pages = client.get_paginator("list_multipart_uploads").paginate(Bucket="vidshard", Prefix=prefix)
    return [u["Key"] for page in pages for u in page.get("Uploads", [])]


def test_orphaned_uploads_are_aborted_even_after_a_kill_past_index_json(small_source, s3_server):
    """A shard task killed mid-upload leaves an incomplete multipart upload (billed, never
    listed). The job aborts those under OUTPUT when it finishes, also when the driver was
    killed between index.json and that clean-up and the re-run finds OUTPUT complete."""
    import boto3

    use_endpoint(s3_server)
    client = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{s3_server}")
    config = WriteConfig(max_video_frames=30, overlap=6, shard_bytes=150_000, encode=EncodeSettings(gop=8))
    write_dataset(small_source, "s3://vidshard/orphans", config)
    for name in ("shard-000001.tar", ".vidshard-work/spool/session_000_00000.tar"):
        client.create_multipart_upload(Bucket="vidshard", Key=f"orphans/{name}")  # as killed tasks leave them
    client.create_multipart_upload(Bucket="vidshard", Key="orphans-of-another-job/shard-000000.tar")
    assert write_dataset(small_source, "s3://vidshard/orphans", config).chunks == 9  # complete: nothing to write
    assert _uploads(client, "orphans/") == []
    assert _uploads(client, "orphans-of-another-job/") == ["orphans-of-another-job/shard-000000.tar"]  # not ours
    for up in client.list_multipart_uploads(Bucket="vidshard", Prefix="orphans-of-another-job/")["Uploads"]:
        client.abort_multipart_upload(Bucket="vidshard", Key=up["Key"], UploadId=up["UploadId"])


def test_orphaned_uploads_are_found_past_the_first_listing_page():
    """S3 lists at most 1000 uploads per request (moto lists all at once, so S3's paging is
    played here): a bucket full of other jobs' uploads must not hide ours."""
    from shardwriter.store import RemoteStore

    class PagingS3:
        def __init__(self, keys):
            self.uploads = sorted((k, f"id-{k}") for k in keys)

        def call_s3(self, op, **kw):
            if op == "abort_multipart_upload":
                self.uploads.remove((kw["Key"], kw["UploadId"]))
                return {}
            assert op == "list_multipart_uploads"
            after = (kw.get("KeyMarker", ""), kw.get("UploadIdMarker", ""))
            rest = [u for u in self.uploads if u[0].startswith(kw.get("Prefix", "")) and u > after]
            page = rest[:2]  # S3 would say 1000
            out = {"Uploads": [{"Key": k, "UploadId": i} for k, i in page], "IsTruncated": len(rest) > 2}
            if out["IsTruncated"]:
                out.update(NextKeyMarker=page[-1][0], NextUploadIdMarker=page[-1][1])
            return out

    fs = PagingS3([f"another/{i}" for i in range(5)] + [f"out/shard-{i:06d}.tar" for i in range(5)] + ["outer/x"])
    store = object.__new__(RemoteStore)
    store.fs, store.root, store.url = fs, "bkt/out", "s3://bkt/out"
    store.remove_partials()
    assert [k for k, _ in fs.uploads] == [f"another/{i}" for i in range(5)] + ["outer/x"]
