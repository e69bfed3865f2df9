"""Running one test case where its failures are visible: a forked child with a memory cap.

The code under test catches exceptions on purpose (skip policies, retries), so a watchdog
inside it (a signal raising TimeoutError, say) can be swallowed and a hang would pass. Here
the parent waits and kills: a case that runs past its time ends as "hung" whatever it
catches. The child caps its address space at its size on arrival + `memory` (RLIMIT_AS), so a
hostile allocation fails fast instead of filling the machine, and reports how far its RSS
grew: a forked child starts with the parent's resident pages (in a full pytest run, Ray,
moto and torch: over 1 GB), which say nothing about the case.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import resource
import time
import traceback
from collections.abc import Callable
from typing import Any

from streaming.errors import SampleError


@dataclasses.dataclass(frozen=True)
class Outcome:
    kind: str  # "ok" (value holds the case's result), "typed" (a SampleError), "error", "hung", "crashed"
    value: Any = None
    error: str = ""  # class name of the exception
    message: str = ""
    fields: dict = dataclasses.field(default_factory=dict)  # shard, key, member, view of a SampleError
    seconds: float = 0.0
    peak_rss: int = 0  # bytes (VmHWM of the child)
    start_rss: int = 0  # bytes (VmRSS of the child on arrival: the parent's pages it shares)

    @property
    def grown(self) -> int:
        """Bytes of RSS the case itself added, at its peak."""
        return self.peak_rss - self.start_rss


def _status(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(field)


def _child(conn, fn: Callable, args: tuple, memory: int) -> None:
    result: dict[str, Any]
    start_rss = _status("VmRSS")
    try:
        resource.setrlimit(resource.RLIMIT_AS, (_status("VmSize") + memory, resource.RLIM_INFINITY))
        try:
            result = {"kind": "ok", "value": fn(*args)}
        except SampleError as exc:
            result = {"kind": "typed", "error": type(exc).__name__, "message": str(exc),
                      "fields": {"shard": exc.shard, "key": exc.key, "member": exc.member, "view": exc.view}}
        except BaseException as exc:  # noqa: BLE001 (reported to the parent, which fails the test)
            result = {"kind": "error", "error": type(exc).__name__, "message": f"{exc}\n{traceback.format_exc()[-3000:]}"}
        result["peak_rss"], result["start_rss"] = _status("VmHWM"), start_rss
        conn.send(result)
    finally:
        os._exit(0)  # no atexit handlers of the parent (pytest) in the child


def isolated(fn: Callable, *args, timeout: float = 10.0, memory: int = 1 << 30) -> Outcome:
    """fn(*args) in a forked child, killed after `timeout` seconds."""
    ctx = multiprocessing.get_context("fork")
    receive, send = ctx.Pipe(duplex=False)
    child = ctx.Process(target=_child, args=(send, fn, args, memory), daemon=True)
    start = time.monotonic()
    child.start()
    send.close()
    ready = receive.poll(timeout)
    seconds = time.monotonic() - start
    if not ready:
        child.kill()
        child.join()
        return Outcome("hung", seconds=seconds, message=f"killed after {timeout} s")
    try:
        result = receive.recv()
    except EOFError:
        child.join()
        return Outcome("crashed", seconds=seconds, message=f"exit code {child.exitcode}")
    child.join()
    return Outcome(seconds=seconds, **result)
