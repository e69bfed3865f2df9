"""Per-frame keypoint files -> one stacked npz per chunk and view.

Source files are `keypoints/<video_id>/<view>/<frame:06d>_<kind>.npz`, named by GLOBAL
frame index, holding any named arrays. A chunk's `<key>.<view>.kpt.npz` stacks every array
over the chunk's frames as `<kind>.<array>` with shape `[T, ...]`, plus `mask` (bool `[T]`,
False where a frame lacks a file of some kind; missing rows are zero).
"""

from __future__ import annotations

import io
import os
import re
import zipfile

import numpy as np

from streaming.format import KPT_ARRAY, KPT_DTYPE

from .errors import SourceError
from .stray import is_stray

KPT_FILE = re.compile(r"(\d{6,})_([A-Za-z0-9][A-Za-z0-9_-]*)\.npz")
# (shape without the frame axis, dtype string) per "<kind>.<array>"
Schema = dict[str, tuple[tuple[int, ...], str]]


def list_keypoints(video_id: str, directory: str, num_frames: int, frames: range | None = None) -> dict[int, dict[str, str]]:
    """frame -> {kind: path} for one view; rejects stray names and frames past the video.
    `frames`: keep only those (an encode task's run: its memory does not grow with the video)."""
    files: dict[int, dict[str, str]] = {}
    try:
        with os.scandir(directory) as listing:  # (one name at a time: never the whole folder's entries at once)
            entries = [e for e in listing if frames is None or _frame_of(e.name) is None or _frame_of(e.name) in frames]
    except OSError as exc:
        raise SourceError(video_id, directory, f"cannot list the keypoint folder ({exc.strerror or exc})") from None
    for entry in sorted(entries, key=lambda e: e.name):
        if is_stray(entry.name):
            continue  # .DS_Store and the like: reported by the source scan
        match = KPT_FILE.fullmatch(entry.name)
        try:
            regular = entry.is_file()
        except OSError as exc:  # a symlink loop, EIO
            raise SourceError(video_id, entry.path, f"cannot read the keypoint file ({exc.strerror or exc})") from None
        if match is None or not regular:
            raise SourceError(video_id, entry.path, "not a keypoint file named <frame:06d>_<name>.npz")
        frame = int(match.group(1))
        if frame >= num_frames:
            raise SourceError(video_id, entry.path, f"keypoints for frame {frame}, but the video has {num_frames} frames")
        kinds = files.setdefault(frame, {})
        kind = match.group(2)
        if kind in kinds:  # `000123_x.npz` and `0000123_x.npz`: neither may silently win
            raise SourceError(
                video_id, entry.path,
                f"two keypoint files for frame {frame} and kind {kind!r}: {kinds[kind]} and {entry.path} "
                "(names that differ only in zero padding)",
            )
        kinds[kind] = entry.path
    return files


def _frame_of(name: str) -> int | None:
    match = KPT_FILE.fullmatch(name)
    return int(match.group(1)) if match else None


def load_frame(video_id: str, path: str) -> dict[str, np.ndarray]:
    """The arrays of one per-frame file; pickled (object) arrays are refused, never loaded,
    and so is an array index.json could not describe (describable)."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
        raise SourceError(video_id, path, f"unreadable keypoint file ({exc})") from None
    except Exception as exc:  # whatever else a damaged archive makes numpy raise: named, not a traceback
        raise SourceError(video_id, path, f"unreadable keypoint file ({type(exc).__name__}: {exc})") from None
    for name, value in arrays.items():
        # index.json records a dtype as `dtype.str`, which a structured or sub-array dtype
        # does not survive ('|V8' reads back as plain bytes): the reader would refuse every sample.
        if np.dtype(value.dtype.str) != value.dtype or not KPT_DTYPE.fullmatch(value.dtype.str):
            raise SourceError(video_id, path, f"array {name!r} has dtype {value.dtype} ({value.dtype.str}), which "
                                              "index.json cannot describe: keypoint arrays must be of one plain type "
                                              "(no structured, object, datetime or sub-array dtypes)")
    return arrays


def frame_schema(video_id: str, kind: str, path: str) -> Schema:
    schema = {f"{kind}.{name}": (a.shape, a.dtype.str) for name, a in load_frame(video_id, path).items()}
    for name in schema:  # the names index.json can hold (the reader's rule), checked once per kind
        if not KPT_ARRAY.fullmatch(name):
            raise SourceError(video_id, path, f"keypoint array name {name!r} cannot be listed in index.json "
                                              "(1-255 characters, no '/' or control characters)")
    return schema


def stack_chunk(
    video_id: str, files: dict[int, dict[str, str]], start: int, end: int, schema: Schema, origin: dict[str, str]
) -> tuple[bytes, int]:
    """The chunk's `kpt.npz` bytes and its number of frames with keypoints. Every file is
    checked against the dataset's `schema` (taken from the first keypoint file of each kind,
    named in `origin` for the message)."""
    arrays = {name: np.zeros((end - start, *shape), dtype=np.dtype(dt)) for name, (shape, dt) in schema.items()}
    kinds = {name.partition(".")[0] for name in schema}
    mask = np.zeros(end - start, dtype=bool)
    for frame in range(start, end):
        present = files.get(frame, {})
        for kind, path in present.items():
            loaded = checked_arrays(video_id, kind, path, schema, origin)
            for name, value in loaded.items():
                arrays[name][frame - start] = value
        mask[frame - start] = kinds <= present.keys()
    arrays["mask"] = mask
    return npz_bytes(arrays), int(mask.sum())


def checked_arrays(
    video_id: str, kind: str, path: str, schema: Schema, origin: dict[str, str]
) -> dict[str, np.ndarray]:
    loaded = {f"{kind}.{n}": a for n, a in load_frame(video_id, path).items()}
    expected = {n for n in schema if n.partition(".")[0] == kind}
    if loaded.keys() != expected:
        raise SourceError(
            video_id, path, f"arrays {sorted(loaded)} differ from {sorted(expected)} in {origin.get(kind)}"
        )
    for name, value in loaded.items():
        shape, dt = schema[name]
        if value.shape != shape or value.dtype.str != dt:
            raise SourceError(
                video_id,
                path,
                f"array {name!r} has shape {value.shape} dtype {value.dtype.str}, "
                f"but {origin.get(kind)} has shape {shape} dtype {dt}: shapes/dtypes must not change between frames",
            )
    return loaded


def npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """An npz that np.load reads, with fixed zip timestamps.

    numpy's savez stamps each zip entry with the current time, which would make two runs
    of the writer differ; this writes the same .npy entries with a fixed date instead.
    """
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for name in sorted(arrays):
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            with zf.open(info, "w", force_zip64=True) as f:
                np.lib.format.write_array(f, np.ascontiguousarray(arrays[name]), allow_pickle=False)
    return buf.getvalue()
