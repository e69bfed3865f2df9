"""Where the writer's files live: a local folder or an object store (s3://, gs://, ...).

OUTPUT is a store, and so is its work area (`OUTPUT/.vidshard-work/`: job.json, the saved
plan, the spool of encoded samples, task records), so every node that can reach OUTPUT can
run any task: nothing is shared but the store. Writes are atomic under their final name:
`create(name)` streams into a hidden `.NAME.<writer>.partial` file of its own, renamed into
place (local), or a multipart upload completed only when the stream is closed without error
(object store; an upload that fails is aborted), so nothing partial is ever listed under a
final name, even while two attempts of one task write it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import posixpath
import shutil
import uuid
from collections.abc import Iterator
from typing import IO

from streaming.format import sha256_of

WORK_DIR = ".vidshard-work"
PART_BYTES = 64 << 20  # multipart part size for object stores (S3's minimum is 5 MiB)
MIN_PART_BYTES = 5 << 20


def is_remote(url: str) -> bool:
    return "://" in url and not url.startswith("file://")


def join(url: str, name: str) -> str:
    return posixpath.join(url.rstrip("/"), name) if is_remote(url) else os.path.join(url.removeprefix("file://"), name)


class LocalStore:
    def __init__(self, root: str):
        self.root = root
        self.url = root

    def _path(self, name: str) -> str:
        return os.path.join(self.root, name)

    def exists(self, name: str) -> bool:
        return os.path.exists(self._path(name))

    @contextlib.contextmanager
    def create(self, name: str, part_bytes: int = PART_BYTES) -> Iterator[IO[bytes]]:
        path = self._path(name)
        folder, base = os.path.split(path)
        os.makedirs(folder, exist_ok=True)
        # A name of its own per writer: two attempts of one task (Ray retried it while the
        # first still runs) must not write into one file, which either could then publish.
        tmp = os.path.join(folder, f".{base}.{os.getpid()}-{uuid.uuid4().hex[:12]}.partial")
        try:
            with open(tmp, "wb") as f:
                yield f
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.remove(tmp)  # e.g. a full disk: leave room, and nothing half-written
            raise

    def write(self, name: str, data: bytes) -> None:
        with self.create(name) as f:
            f.write(data)

    def put_file(self, local_path: str, name: str) -> None:
        with self.create(name) as f, open(local_path, "rb") as src:
            shutil.copyfileobj(src, f, 1 << 20)

    def read(self, name: str) -> bytes:
        with open(self._path(name), "rb") as f:
            return f.read()

    def open(self, name: str) -> IO[bytes]:
        return open(self._path(name), "rb")

    def listing(self, prefix: str = "") -> list[str]:
        """Names directly under `prefix` (hidden ones excluded at the top level)."""
        folder = self._path(prefix)
        if not os.path.isdir(folder):
            return []
        return sorted(n for n in os.listdir(folder) if prefix or not n.startswith("."))

    def delete(self, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.remove(self._path(name))

    def delete_tree(self, prefix: str) -> None:
        shutil.rmtree(self._path(prefix), ignore_errors=True)

    def digest(self, name: str) -> tuple[int, str]:
        with open(self._path(name), "rb") as f:
            return sha256_of(f)

    def remove_partials(self) -> None:
        """A killed task leaves `.NAME.<writer>.partial` files at the top level; none is ever listed."""
        for name in os.listdir(self.root) if os.path.isdir(self.root) else []:
            if name.startswith(".") and name.endswith(".partial"):
                self.delete(name)


class RemoteStore:
    """An fsspec object store; endpoint and credentials from the standard settings
    (for S3: AWS_ENDPOINT_URL, AWS_* variables, profiles, instance roles)."""

    def __init__(self, url: str):
        import fsspec

        self.url = url.rstrip("/")
        self.fs, self.root = fsspec.core.url_to_fs(self.url)

    def _path(self, name: str) -> str:
        return posixpath.join(self.root, name)

    def exists(self, name: str) -> bool:
        return self.fs.exists(self._path(name))

    @contextlib.contextmanager
    def create(self, name: str, part_bytes: int = PART_BYTES) -> Iterator[IO[bytes]]:
        # A buffered fsspec file uploads parts as its buffer fills and completes the object
        # on close(); its __exit__ would close (complete) even on an error, so it is not used.
        f = self.fs.open(self._path(name), "wb", block_size=max(MIN_PART_BYTES, part_bytes))
        try:
            yield f
        except BaseException:
            f.discard()  # S3: aborts the multipart upload; nothing appears under the name
            f.closed = True  # nothing left to complete (its __del__ would try)
            raise
        f.close()

    def write(self, name: str, data: bytes) -> None:
        self.fs.pipe_file(self._path(name), data)

    def put_file(self, local_path: str, name: str) -> None:
        self.fs.put_file(local_path, self._path(name))

    def read(self, name: str) -> bytes:
        return self.fs.cat_file(self._path(name))

    def open(self, name: str) -> IO[bytes]:
        return self.fs.open(self._path(name), "rb", block_size=8 << 20, cache_type="readahead")

    def listing(self, prefix: str = "") -> list[str]:
        try:
            names = [posixpath.basename(p.rstrip("/")) for p in self.fs.ls(self._path(prefix), detail=False, refresh=True)]
        except FileNotFoundError:
            return []
        return sorted(n for n in names if prefix or not n.startswith("."))

    def delete(self, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm_file(self._path(name))

    def delete_tree(self, prefix: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm(self._path(prefix), recursive=True)

    def digest(self, name: str) -> tuple[int, str]:
        with self.open(name) as f:
            return sha256_of(f)

    def remove_partials(self) -> None:
        """Multipart uploads of killed tasks under this prefix are aborted (S3 only), page by
        page: the bucket may hold other jobs' uploads, more than one listing returns."""
        if not hasattr(self.fs, "call_s3"):
            return
        bucket, _, key = self.root.partition("/")
        page = {"Bucket": bucket, "Prefix": key.rstrip("/") + "/" if key else ""}
        while True:
            try:
                listing = self.fs.call_s3("list_multipart_uploads", **page)
            except (OSError, ValueError, PermissionError):  # e.g. no s3:ListBucketMultipartUploads
                return
            for up in listing.get("Uploads", []):
                self.fs.call_s3("abort_multipart_upload", Bucket=bucket, Key=up["Key"], UploadId=up["UploadId"])
            if not listing.get("IsTruncated"):
                return
            page.update(KeyMarker=listing["NextKeyMarker"], UploadIdMarker=listing["NextUploadIdMarker"])


Store = LocalStore | RemoteStore


def open_store(url: str) -> Store:
    return RemoteStore(url) if is_remote(url) else LocalStore(url.removeprefix("file://"))


def write_json(store: Store, name: str, obj) -> None:
    """`streaming.format.dumps(obj)`, byte for byte, streamed into `name`: the encoder's
    pieces are written as they come, so a large index.json is never held whole (with an
    indent, json.dumps collects tens of small strings per sample before joining them)."""
    encoder = json.JSONEncoder(sort_keys=True, indent=1, ensure_ascii=False)
    with store.create(name) as f:
        batch: list[str] = []
        for piece in encoder.iterencode(obj):
            batch.append(piece)
            if len(batch) >= 4096:
                f.write("".join(batch).encode())
                batch.clear()
        batch.append("\n")
        f.write("".join(batch).encode())


def work_url(output: str, work_dir: str | None = None) -> str:
    """The work area: OUTPUT/.vidshard-work, or a folder of its own under --work-dir, named
    after OUTPUT (the writer deletes its work area when done: never the folder given)."""
    if work_dir is None:
        return join(output, WORK_DIR)
    return join(work_dir, f"vidshard-work-{hashlib.sha256(output.encode()).hexdigest()[:16]}")
