"""Files that operating systems, editors and sync tools leave in source folders: never data.

Any name starting with a dot (`.DS_Store`, AppleDouble `._front.mp4`, vim's `.front.mp4.swp`),
Windows' folder files (`Thumbs.db`, `desktop.ini`), and editor backups (`front.mp4~`,
emacs' `#front.mp4#`). They are skipped with a warning, never taken as a view or a
keypoint file.
"""

from __future__ import annotations

STRAY_NAMES = frozenset({"thumbs.db", "ehthumbs.db", "desktop.ini"})


def is_stray(name: str) -> bool:
    return (
        name.startswith(".")
        or name.lower() in STRAY_NAMES
        or name.endswith("~")
        or (len(name) > 1 and name.startswith("#") and name.endswith("#"))
    )
