"""Where the writer's tasks run: one interface for a local process pool and for Ray.

The driver submits plain functions of plain, picklable task values (task.py, assemble.py)
and waits on many handles at once; an outcome is the task's return value or the exception
it raised (a SourceError crosses the process boundary with its fields). The driver never
moves media bytes through an engine: tasks read and write the stores themselves.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
from collections.abc import Callable, Iterable
from typing import Any, Protocol


class Engine(Protocol):
    parallelism: int  # tasks that can run at once (scheduling only: never changes the bytes)

    def submit(self, fn: Callable[[Any], Any], task: Any) -> Any:
        """Start fn(task); returns a handle."""

    def wait(self, handles: Iterable[Any]) -> list[tuple[Any, Any]]:
        """Block until at least one handle is done; (handle, result-or-exception) for every done one."""

    def close(self) -> None:
        """Cancel what is still running and release the workers."""


class LocalEngine:
    """A pool of spawned processes (fresh interpreters: no inherited locks or threads)."""

    def __init__(self, workers: int):
        self.parallelism = max(1, workers)
        self._pool = cf.ProcessPoolExecutor(max_workers=self.parallelism, mp_context=multiprocessing.get_context("spawn"))

    def submit(self, fn, task):
        return self._pool.submit(fn, task)

    def wait(self, handles):
        done, _ = cf.wait(list(handles), return_when=cf.FIRST_COMPLETED)
        out = []
        for fut in done:
            exc = fut.exception()
            out.append((fut, exc if exc is not None else fut.result()))
        return out

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


def run_all(engine: Engine, fn: Callable, tasks: list, limit: int | None = None) -> Iterable[tuple[Any, Any]]:
    """(task, outcome) for every task, as they finish, with at most `limit` in flight."""
    limit = limit or 4 * engine.parallelism
    queue = list(reversed(tasks))
    running: dict[Any, Any] = {}
    while queue or running:
        while queue and len(running) < limit:
            task = queue.pop()
            running[engine.submit(fn, task)] = task
        for handle, outcome in engine.wait(running):
            yield running.pop(handle), outcome
