"""Where finished files go: a local OUTPUT folder, or an object store (s3://, gs://, ...).

Shards are always assembled in a local staging folder and *published* when complete: a
rename into a local OUTPUT, an upload to an object store (a PUT creates the object whole,
so nothing partial is ever listed under a final name). index.json is published last.
"""

from __future__ import annotations

import os
import posixpath

from streaming.format import sha256_of


def is_remote(url: str) -> bool:
    return "://" in url and not url.startswith("file://")


class LocalStore:
    def __init__(self, root: str):
        self.root = root
        os.makedirs(root, exist_ok=True)

    def exists(self, name: str) -> bool:
        return os.path.exists(os.path.join(self.root, name))

    def publish(self, local_path: str, name: str) -> None:
        os.replace(local_path, os.path.join(self.root, name))

    def write(self, name: str, data: bytes) -> None:
        tmp = os.path.join(self.root, f".{name}.partial")
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, os.path.join(self.root, name))

    def read(self, name: str) -> bytes:
        with open(os.path.join(self.root, name), "rb") as f:
            return f.read()

    def listing(self) -> list[str]:
        return sorted(n for n in os.listdir(self.root) if not n.startswith(".")) if os.path.isdir(self.root) else []

    def digest(self, name: str) -> tuple[int, str]:
        return file_digest(os.path.join(self.root, name))


class RemoteStore:
    """An fsspec object store; endpoint and credentials from the standard settings
    (for S3: AWS_ENDPOINT_URL, AWS_* variables, profiles)."""

    def __init__(self, url: str):
        import fsspec

        self.fs, self.root = fsspec.core.url_to_fs(url.rstrip("/"))

    def _path(self, name: str) -> str:
        return posixpath.join(self.root, name)

    def exists(self, name: str) -> bool:
        return self.fs.exists(self._path(name))

    def publish(self, local_path: str, name: str) -> None:
        self.fs.put_file(local_path, self._path(name))
        os.remove(local_path)

    def write(self, name: str, data: bytes) -> None:
        self.fs.pipe_file(self._path(name), data)

    def read(self, name: str) -> bytes:
        return self.fs.cat_file(self._path(name))

    def listing(self) -> list[str]:
        try:
            return sorted(posixpath.basename(p) for p in self.fs.ls(self.root, detail=False))
        except FileNotFoundError:
            return []

    def digest(self, name: str) -> tuple[int, str]:
        with self.fs.open(self._path(name), "rb") as f:
            return sha256_of(f)


def file_digest(path: str) -> tuple[int, str]:
    with open(path, "rb") as f:
        return sha256_of(f)


def open_store(output: str) -> LocalStore | RemoteStore:
    return RemoteStore(output) if is_remote(output) else LocalStore(output.removeprefix("file://"))
