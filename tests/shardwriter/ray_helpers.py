"""Shipped to Ray workers with the job (runtime_env py_modules): task wrappers for tests."""

from __future__ import annotations

import functools
import os
import signal


class WrappedEngine:
    """An engine whose every task function is wrapped: `wrap(fn, task)` runs instead of fn(task)."""

    def __init__(self, inner, wrap):
        self.inner, self.wrap = inner, wrap
        self.parallelism = inner.parallelism

    def submit(self, fn, task):
        return self.inner.submit(functools.partial(self.wrap, fn), task)

    def wait(self, handles):
        return self.inner.wait(handles)

    def close(self):
        self.inner.close()


def task_name(task) -> str:
    spec = getattr(task, "spec", None)
    if spec is not None:
        return f"video-{spec.video_id}-{task.first}"
    index = getattr(task, "index", None)
    return f"shard-{index}" if index is not None else f"probe-{task.video_id}"


def kill_mid_task(marker_dir: str, fn, task):
    """The first attempt of every encode and shard task SIGKILLs its own worker process in
    the middle of its work: right after the first sample fragment is spooled (encode) or
    copied into the shard being uploaded (shard); the task's other outputs are not written."""
    name = task_name(task)
    marker = os.path.join(marker_dir, name)
    if name.startswith("probe") or os.path.exists(marker):
        return fn(task)
    open(marker, "w").close()
    import shardwriter.assemble as assemble
    import shardwriter.task as encode_task

    def dying(original):
        def call(*args, **kw):
            result = original(*args, **kw)
            os.kill(os.getpid(), signal.SIGKILL)  # as a preempted node or the OOM killer would
            return result

        return call

    if name.startswith("video"):
        encode_task.write_fragment = dying(encode_task.write_fragment)
    else:
        assemble.copy_fragment = dying(assemble.copy_fragment)
    return fn(task)


def late_write(path: str) -> None:
    """A task that finishes its write although it is cancelled, as one inside a long C call
    (an encoder, an upload) does: the interrupt lands only after the call returns."""
    import time

    open(path + ".started", "w").close()
    try:
        time.sleep(3)
    except KeyboardInterrupt:
        time.sleep(1)
    with open(path, "w") as f:
        f.write("late")
