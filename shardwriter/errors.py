"""Typed writer errors. Each names the video and file it is about and says why."""

from __future__ import annotations


class WriterError(Exception):
    """A problem that stops the job (bad arguments, an OUTPUT that holds another dataset)."""


class SourceError(WriterError):
    """One video of the source cannot be written; `--on-error skip` skips that video."""

    def __init__(self, video_id: str | None, path: str, reason: str):
        self.video_id = video_id
        self.path = path
        self.reason = reason
        where = f"video {video_id!r}: " if video_id else ""
        super().__init__(f"{where}{path}: {reason}")

    def __reduce__(self):  # crosses process boundaries (pool, Ray) with its fields intact
        return SourceError, (self.video_id, self.path, self.reason)

    def to_json(self) -> dict[str, str | None]:
        return {"video_id": self.video_id, "path": self.path, "reason": self.reason}
