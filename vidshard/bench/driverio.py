"""What the driver process itself reads and writes, so `vidshard write` can show that it plans
and does not move media.

`/proc/self/io` rchar/wchar count read(2)/write(2)-family calls on files and pipes, but not
send/recv on sockets (which Ray's gRPC and the object-store clients use). So two more
counts: the bytes on the driver's TCP sockets open at the end of the job, from the kernel
(TCP_INFO bytes_received and bytes_acked; Ray keeps its channels open), and the bytes the
driver moved to and from object stores, counted by the store layer (store.REMOTE_IO; an
object-store client may close a connection after each request, and the kernel forgets a
closed socket's counts).
"""

from __future__ import annotations

import dataclasses
import os
import socket
import struct

from .store import REMOTE_IO

_TCP_BYTES = struct.Struct("QQ")  # tcp_info.tcpi_bytes_acked, tcpi_bytes_received
_TCP_BYTES_AT = 120  # their offset in struct tcp_info (linux/tcp.h, stable since 4.1/4.2)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Counters:
    rchar: int = 0
    wchar: int = 0
    store_read: int = 0
    store_written: int = 0
    sockets: dict[tuple[int, int], tuple[int, int]] = dataclasses.field(default_factory=dict)


def snapshot() -> Counters:
    try:
        with open("/proc/self/io") as f:
            fields = dict(line.split(": ") for line in f.read().splitlines())
    except OSError:  # not Linux
        fields = {"rchar": 0, "wchar": 0}
    return Counters(rchar=int(fields["rchar"]), wchar=int(fields["wchar"]), store_read=REMOTE_IO.read,
                    store_written=REMOTE_IO.written, sockets=_tcp_sockets())


def _tcp_sockets() -> dict[tuple[int, int], tuple[int, int]]:
    """(inode, fd) -> (bytes sent and acknowledged, bytes received) of each open TCP socket."""
    out = {}
    try:
        names = os.listdir("/proc/self/fd")
    except OSError:  # not Linux
        return out
    for name in names:
        fd = int(name)
        try:
            target = os.readlink(f"/proc/self/fd/{name}")
        except OSError:
            continue
        if not target.startswith("socket:["):
            continue
        try:
            sock = socket.socket(fileno=os.dup(fd))
        except OSError:
            continue
        with sock:
            if sock.family not in (socket.AF_INET, socket.AF_INET6) or sock.type != socket.SOCK_STREAM:
                continue
            try:
                info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
            except OSError:
                continue
        if len(info) >= _TCP_BYTES_AT + _TCP_BYTES.size:
            out[(int(target[8:-1]), fd)] = _TCP_BYTES.unpack_from(info, _TCP_BYTES_AT)
    return out


@dataclasses.dataclass(frozen=True, kw_only=True)
class DriverIO:
    """The driver's own I/O during the job, from the moment the engine is up and OUTPUT's
    stores have answered to the end (what could grow with the dataset); start-up (imports,
    joining the cluster, shipping the code) is a fixed cost, counted apart."""

    read_bytes: int  # rchar
    written_bytes: int  # wchar
    socket_received_bytes: int  # TCP sockets open at the end of the job (Ray's channels)
    socket_sent_bytes: int
    store_read_bytes: int  # to and from object stores, counted by the writer's store layer
    store_written_bytes: int
    startup_read_bytes: int
    startup_written_bytes: int
    peak_rss_bytes: int

    @property
    def total_bytes(self) -> int:
        return (self.read_bytes + self.written_bytes + self.socket_received_bytes + self.socket_sent_bytes
                + self.store_read_bytes + self.store_written_bytes)


def measure(start: Counters, ready: Counters, end: Counters) -> DriverIO:
    sent = received = 0
    for sock, (tx, rx) in end.sockets.items():
        tx0, rx0 = ready.sockets.get(sock, (0, 0))  # a socket opened during the job counts whole
        sent += tx - tx0
        received += rx - rx0
    return DriverIO(read_bytes=end.rchar - ready.rchar, written_bytes=end.wchar - ready.wchar,
                    socket_received_bytes=received, socket_sent_bytes=sent,
                    store_read_bytes=end.store_read - ready.store_read, store_written_bytes=end.store_written - ready.store_written,
                    startup_read_bytes=ready.rchar - start.rchar, startup_written_bytes=ready.wchar - start.wchar,
                    peak_rss_bytes=peak_rss())


def peak_rss() -> int:
    """VmHWM: the peak RSS of this process's own memory. (getrusage's ru_maxrss survives exec,
    so a driver started by a large process would report its parent's size.)"""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0
