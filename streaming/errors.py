"""Typed reader errors, all `ReaderError`s: code that must let the reader's own verdicts pass
(a retry loop, a handler of OS errors) catches that one base, and so does an application
that says them to its user (`vidshard`: one line, exit 2).

`SampleError` and its subclasses are about one sample (or the samples of one byte range):
each carries the shard, the sample key and, when known, the member and the view, and
`on_error="skip"` turns them into counted, logged skips. `StorageError` is about the storage
itself (a server that cannot serve byte ranges): no sample of it can be read, so it stops
the job whatever the policy.
"""

from __future__ import annotations


class ReaderError(Exception):
    """The base of the reader's typed errors (never an OSError: an `except OSError` for the
    disk or the network does not swallow them)."""


class SampleError(ReaderError):
    """A sample that cannot be delivered; `on_error="skip"` counts it and moves on."""

    reason = "bad sample"

    # `shard` has a default only so that torch's DataLoader can re-raise a worker's error in
    # the main process as this same type (it calls the class with the message alone).
    def __init__(self, message: str, *, shard: str = "", key: str | None = None, view: str | None = None,
                 member: str | None = None):
        self.shard, self.key, self.view, self.member = shard, key, view, member
        self.message = message
        where = ", ".join(f"{k}={v}" for k, v in (("shard", shard), ("key", key), ("member", member), ("view", view)) if v)
        super().__init__(f"{message} [{where}]" if where else message)

    def at(self, *, key: str | None = None, member: str | None = None) -> SampleError:
        """The same error naming the sample key it belongs to (where the parser could not know it)."""
        return type(self)(self.message, shard=self.shard, key=self.key or key, view=self.view, member=self.member or member)

    def __reduce__(self):  # DataLoader workers send errors to the main process pickled
        return _rebuild, (type(self), self.message, self.shard, self.key, self.view, self.member)


def _rebuild(cls, message, shard, key, view, member):
    return cls(message, shard=shard, key=key, view=view, member=member)


class ShardFormatError(SampleError):
    """The tar or a member is not what the format says (missing member, bad JSON, ...)."""

    reason = "format"


class KeypointError(ShardFormatError):
    """A keypoint archive (.kpt.npz) that is damaged, hostile, or disagrees with index.json."""

    reason = "keypoints"


class DecodeError(SampleError):
    """A clip does not decode to the frames its meta.json promises."""

    reason = "decode"


class ShardReadError(SampleError):
    """A shard's bytes could not be read (after retries, or a permanent error such as a
    missing or forbidden object), or a download does not match index.json."""

    reason = "read"


class ShardNotFound(ShardReadError):
    """The object is not there (a 404, no such key): what `remote.retry` raises for a
    FileNotFoundError, so that a caller reading index.json can say the dataset is not found."""


class StorageError(ReaderError):
    """The storage cannot serve this dataset at all; not a per-sample error."""


class RangeNotSupportedError(StorageError):
    """An HTTP server answered a ranged GET with the whole file (status 200)."""


class DatasetError(ReaderError):
    """A dataset that cannot be opened as asked (not one sample's problem): no index.json
    where it was looked for, an index.json or shard list refused, options it cannot satisfy.
    Raised as one of the two below, each also the built-in type it was before."""


class DatasetNotFound(DatasetError, FileNotFoundError):
    """No index.json where the source says."""


class DatasetRefused(DatasetError, ValueError):
    """index.json, the shard list or the options refused (the message says which and why)."""


class ResumeError(ReaderError, ValueError):
    """A resume state that cannot be used here: not a loader state, one saved by another
    rank or worker, or (`streaming.resume.ResumeMismatch`) under other settings. Also a
    ValueError, as these were before."""
