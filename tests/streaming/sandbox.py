"""Running one test case where its failures are visible: a forked child, measured, no cap.

The code under test catches exceptions on purpose (skip policies, retries), so a watchdog
inside it (a signal raising TimeoutError, say) can be swallowed and a hang would pass. Here
the parent waits and kills: a case that runs past its time ends as "hung" whatever it
catches.

Memory is measured as a user sees it: the child's peak RSS growth (VmHWM minus its RSS on
arrival: a forked child starts with the parent's resident pages, in a full pytest run Ray,
moto and torch, over 1 GB, which say nothing about the case), and of its address space
(VmPeak minus VmSize on arrival). There is no RLIMIT_AS: a cap turns a 2 GB allocation into a
tidy MemoryError the reader's own handling may report as a clean refusal, and hides the
bug. Only to keep the machine alive, the parent polls the child's RSS and kills it past
`kill_at` bytes of growth ("memory": a failure of the case, never a pass).
"""

from __future__ import annotations

import contextlib
import dataclasses
import multiprocessing
import os
import time
import traceback
from collections.abc import Callable
from typing import Any

from streaming.errors import SampleError


@dataclasses.dataclass(frozen=True)
class Outcome:
    kind: str  # "ok" (value holds the case's result), "typed" (a SampleError), "error", "hung", "crashed", "memory"
    value: Any = None
    error: str = ""  # class name of the exception
    message: str = ""
    fields: dict = dataclasses.field(default_factory=dict)  # shard, key, member, view of a SampleError
    seconds: float = 0.0
    peak_rss: int = 0  # bytes (VmHWM of the child)
    start_rss: int = 0  # bytes (VmRSS of the child on arrival: the parent's pages it shares)
    peak_vm: int = 0  # bytes (VmPeak: the most address space the child held)
    start_vm: int = 0  # bytes (VmSize on arrival)

    @property
    def grown(self) -> int:
        """Bytes of RSS the case itself added, at its peak."""
        return self.peak_rss - self.start_rss

    @property
    def reserved(self) -> int:
        """Bytes of address space the case itself added, at its peak."""
        return self.peak_vm - self.start_vm


def _status(field: str, pid: str = "self") -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(field)


def _child(conn, fn: Callable, args: tuple) -> None:
    result: dict[str, Any]
    start_rss, start_vm = _status("VmRSS"), _status("VmSize")
    conn.send(start_rss)  # the parent's watchdog measures growth from here
    try:
        try:
            result = {"kind": "ok", "value": fn(*args)}
        except SampleError as exc:
            result = {"kind": "typed", "error": type(exc).__name__, "message": str(exc),
                      "fields": {"shard": exc.shard, "key": exc.key, "member": exc.member, "view": exc.view}}
        except BaseException as exc:  # noqa: BLE001 (reported to the parent, which fails the test)
            result = {"kind": "error", "error": type(exc).__name__, "message": f"{exc}\n{traceback.format_exc()[-3000:]}"}
        result.update(peak_rss=_status("VmHWM"), start_rss=start_rss, peak_vm=_status("VmPeak"), start_vm=start_vm)
        conn.send(result)
    finally:
        os._exit(0)  # no atexit handlers of the parent (pytest) in the child


def isolated(fn: Callable, *args, timeout: float = 10.0, kill_at: int = 4 << 30) -> Outcome:
    """fn(*args) in a forked child, killed after `timeout` seconds or past `kill_at` bytes of RSS growth."""
    ctx = multiprocessing.get_context("fork")
    receive, send = ctx.Pipe(duplex=False)
    child = ctx.Process(target=_child, args=(send, fn, args))  # not daemonic: a case may start DataLoader workers
    start = time.monotonic()
    child.start()
    send.close()
    start_rss = receive.recv() if receive.poll(timeout) else 0
    ready, grown = False, 0
    while not ready and time.monotonic() - start < timeout:
        ready = receive.poll(0.02)
        with contextlib.suppress(OSError, KeyError):  # gone already: its result is in the pipe
            grown = max(grown, _status("VmRSS", str(child.pid)) - start_rss)
        if grown > kill_at:
            child.kill()
            child.join()
            return Outcome("memory", seconds=time.monotonic() - start, peak_rss=start_rss + grown, start_rss=start_rss,
                           message=f"killed: its RSS grew past {kill_at} bytes")
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
