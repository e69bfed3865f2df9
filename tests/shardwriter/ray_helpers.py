"""Importable by Ray workers: a task wrapper whose first attempt per video kills its worker."""

from __future__ import annotations

import os


def crash_first_attempt(fn, marker_dir: str, task):
    marker = os.path.join(marker_dir, task.spec.video_id)
    if not os.path.exists(marker):
        open(marker, "w").close()
        os._exit(1)  # the worker process dies mid-task, as on a preempted node
    return fn(task)
