"""Typed reader errors. Each carries the shard, the sample key and (when known) the view."""

from __future__ import annotations


class SampleError(Exception):
    """A sample that cannot be delivered; `on_error="skip"` counts it and moves on."""

    reason = "bad sample"

    def __init__(self, message: str, *, shard: str, key: str | None = None, view: str | None = None):
        self.shard, self.key, self.view = shard, key, view
        where = ", ".join(f"{k}={v}" for k, v in (("shard", shard), ("key", key), ("view", view)) if v)
        super().__init__(f"{message} [{where}]")

    def __reduce__(self):
        return _rebuild, (type(self), self.args[0].rsplit(" [", 1)[0], self.shard, self.key, self.view)


def _rebuild(cls, message, shard, key, view):
    return cls(message, shard=shard, key=key, view=view)


class ShardFormatError(SampleError):
    """The tar or a member is not what the format says (missing member, bad JSON, ...)."""

    reason = "format"


class DecodeError(SampleError):
    """A clip does not decode to the frames its meta.json promises."""

    reason = "decode"
