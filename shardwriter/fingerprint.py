"""OUTPUT belongs to one SOURCE: a fingerprint of the source listing, recorded with the run
and with the finished dataset, and compared before anything else is done with OUTPUT.

    WORK/source.json     the listing of the run in progress (written with job.json)
    OUTPUT/source.json   the listing the finished dataset was written from (before index.json)

The fingerprint is, per video, a sha256 over the relative path, size and modification time
of every file of it (its view files, its annotation, its keypoint files): taken from
directory listings and stat alone, on the driver, so a finished OUTPUT is checked without
opening a video. A copy made with its times kept (`cp -p`, `rsync -t`, shutil.copytree) is
the same source; a file rewritten in place is not.
"""

from __future__ import annotations

import hashlib
import json
import os

from streaming.format import dumps

from .errors import WriterError

SOURCE_NAME = "source.json"


def _entries(root: str, folder: str) -> list[str]:
    found = []
    for dirpath, dirnames, files in os.walk(os.path.join(root, folder)):  # errors (loops, EIO): left out, reported by the probe
        dirnames.sort()
        for name in sorted(files):
            path = os.path.join(dirpath, name)
            try:
                st = os.stat(path)
                found.append(f"{os.path.relpath(path, root)}\0{st.st_size}\0{st.st_mtime_ns}")
            except OSError as exc:  # a symlink loop: its name and the error, so the fingerprint stays a function of the listing
                found.append(f"{os.path.relpath(path, root)}\0{exc.errno}")
    return found


def source_fingerprint(root: str, video_ids: tuple[str, ...] | list[str]) -> dict[str, str]:
    """video id -> sha256 of its files' relative paths, sizes and modification times."""
    out = {}
    for vid in video_ids:
        lines = _entries(root, os.path.join("videos", vid)) + _entries(root, os.path.join("keypoints", vid))
        annotation = os.path.join(root, "annotations", f"{vid}.json")
        try:
            st = os.stat(annotation)
            lines.append(f"annotations/{vid}.json\0{st.st_size}\0{st.st_mtime_ns}")
        except OSError as exc:
            lines.append(f"annotations/{vid}.json\0{exc.errno}")
        out[vid] = hashlib.sha256("\n".join(lines).encode()).hexdigest()
    return out


def record(store, fingerprint: dict[str, str]) -> None:
    store.write(SOURCE_NAME, dumps({"videos": fingerprint}))


def check_same_source(store, fingerprint: dict[str, str], output: str, what: str) -> None:
    """WriterError naming the videos that differ when `store` records another source's
    listing. `what`: "a finished dataset" or "an unfinished run", for the message. A store
    without the record (written by a vidshard from before it) is not checked."""
    if not store.exists(SOURCE_NAME):
        return
    try:
        saved = json.loads(store.read(SOURCE_NAME))["videos"]
    except (ValueError, KeyError, TypeError):
        raise WriterError(f"{store.url}/{SOURCE_NAME}: unreadable record of the source {output} was written from") from None
    if saved == fingerprint:
        return
    only_old = sorted(set(saved) - set(fingerprint))
    only_new = sorted(set(fingerprint) - set(saved))
    changed = sorted(v for v in set(saved) & set(fingerprint) if saved[v] != fingerprint[v])
    parts = []
    for label, names in (("videos only in this SOURCE", only_new), ("videos only in the source it was written from",
                                                                   only_old),
                         ("videos whose files differ (names, sizes or modification times)", changed)):
        if names:
            parts.append(f"{label}: {', '.join(names[:5])}" + (f" and {len(names) - 5} more" if len(names) > 5 else ""))
    raise WriterError(f"{output} holds {what} written from another SOURCE ({'; '.join(parts)}): write into a new OUTPUT, "
                      "or give the SOURCE it was written from")
