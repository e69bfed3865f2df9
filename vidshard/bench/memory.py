"""Peak resident memory of this process and of its children (DataLoader workers), Linux /proc."""

from __future__ import annotations

import os
import resource


def peak_rss_mb() -> float:
    """This process's peak RSS so far."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _cmdline(pid: int | str) -> bytes:
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        return f.read()


def _status_kb(pid: int, field: str) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return float(line.split()[1])
    return 0.0


def process_usage(pid: int) -> dict[str, float]:
    """Current RSS (MB) and open file descriptors of a live process."""
    return {"rss_mb": _status_kb(pid, "VmRSS") / 1024, "fds": len(os.listdir(f"/proc/{pid}/fd"))}


def worker_pids() -> list[int]:
    """Live forked children sharing our command line (DataLoader workers)."""
    return sorted(children_peak_rss_mb())


def children_peak_rss_mb() -> dict[int, float]:
    """pid -> peak RSS (VmHWM) of live forked children (DataLoader workers share our command
    line; helpers such as multiprocessing's resource tracker do not). Call while they live."""
    me, peaks = os.getpid(), {}
    mine = _cmdline(me)
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            if ppid != me or _cmdline(pid) != mine:
                continue
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        peaks[int(pid)] = int(line.split()[1]) / 1024
        except (OSError, ValueError, IndexError):
            continue  # exited meanwhile
    return peaks
