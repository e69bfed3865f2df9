"""The probe task: one source video -> its VideoSpec, keypoint schema and fingerprint. It
runs on the engine like the encode tasks, so the driver never reads media.

    spec         source.load_video: views, frame counts, rates, sizes, timeline (validated)
    schema       source.keypoint_schema of this video alone (the driver keeps, per kind,
                 the first video's in sorted order: the same as scanning them all)
    fingerprint  sha256 over every source file's name, size and mtime: a resumed run
                 refuses a source that changed since the plan was saved
    encodable    each view's clip settings (size, orientation, colour) are checked here,
                 so a view the encoder cannot take is a source error before the plan
"""

from __future__ import annotations

import dataclasses
import hashlib
import os

from .encode import EncodeSettings, view_encode
from .errors import SourceError
from .keypoints import Schema
from .source import VideoSpec, keypoint_schema, load_video


@dataclasses.dataclass(frozen=True, kw_only=True)
class ProbeTask:
    source: str
    video_id: str
    views: tuple[str, ...]
    truncate_views: bool
    encode: EncodeSettings


@dataclasses.dataclass(frozen=True, kw_only=True)
class ProbeResult:
    spec: VideoSpec
    schema: Schema
    origin: dict[str, str]
    fingerprint: str


def run_probe_task(task: ProbeTask, probes: list | None = None) -> ProbeResult:
    """`probes`: the views' ViewProbes where the caller has them (check.py)."""
    spec = load_video(task.source, task.video_id, task.views, task.truncate_views, task.encode.autorotate,
                      resize=task.encode.resize is not None, probes=probes)
    schema, origin = keypoint_schema([spec], strict=True)
    for path, source in zip(spec.paths, spec.sources):
        try:
            view_encode(path, source, task.encode)
        except ValueError as exc:
            raise SourceError(spec.video_id, path, str(exc)) from None
    return ProbeResult(spec=spec, schema=schema, origin=origin, fingerprint=fingerprint(task.source, spec))


def fingerprint(root: str, spec: VideoSpec) -> str:
    paths = [*spec.paths, os.path.join(root, "annotations", f"{spec.video_id}.json")]
    for kdir in spec.keypoint_dirs:
        if kdir is not None:
            paths += sorted(e.path for e in os.scandir(kdir))
    digest = hashlib.sha256()
    for path in paths:
        st = os.stat(path)
        digest.update(f"{os.path.relpath(path, root)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()

