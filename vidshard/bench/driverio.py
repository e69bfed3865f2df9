"""What the writer's driver process itself reads and writes, so `vidshard write` and the
bench can show that it plans and does not move media. An instrument of the CLI and bench:
the writer library only says when its job phases begin and end (`write_dataset(on_phase=)`).

`/proc/self/io` rchar/wchar count read(2)/write(2)-family calls on files and pipes, but not
send/recv on sockets (which Ray's gRPC and the object-store clients use). So two more
counts: the bytes on the driver's TCP sockets open at the end of the job, from the kernel
(TCP_INFO bytes_received and bytes_acked; Ray keeps its channels open), and the bytes the
driver moved to and from object stores, counted around the writer's object-store class
(`count_store_io`; an object-store client may close a connection after each request, and
the kernel forgets a closed socket's counts). Linux only: elsewhere the counts are 0.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import socket
import struct
from collections.abc import Iterator
from typing import IO

from shardwriter.store import PART_BYTES, RemoteStore

_TCP_BYTES = struct.Struct("QQ")  # tcp_info.tcpi_bytes_acked, tcpi_bytes_received
_TCP_BYTES_AT = 120  # their offset in struct tcp_info (linux/tcp.h, stable since 4.1/4.2)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Counters:
    rchar: int = 0
    wchar: int = 0
    store_read: int = 0
    store_written: int = 0
    sockets: dict[tuple[int, int], tuple[int, int]] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(kw_only=True)
class Transfer:
    """Bytes this process moved to and from object stores."""

    read: int = 0
    written: int = 0


STORE_IO = Transfer()


class _Counted:
    """A file of an object store whose reads and writes are added to STORE_IO."""

    def __init__(self, f):
        self._f = f

    def read(self, n: int = -1) -> bytes:
        data = self._f.read(n)
        STORE_IO.read += len(data)
        return data

    def write(self, data) -> int:
        STORE_IO.written += len(data)
        return self._f.write(data)

    def close(self) -> None:
        self._f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def count_store_io() -> None:
    """From now on, this process's object-store transfers (`shardwriter.store.RemoteStore`:
    reads, writes, uploads, opened files) are added to STORE_IO. Once per process."""
    if getattr(RemoteStore, "_counted", False):
        return
    create, write, put_file, read, open_ = RemoteStore.create, RemoteStore.write, RemoteStore.put_file, RemoteStore.read, RemoteStore.open

    @contextlib.contextmanager
    def counted_create(self, name: str, part_bytes: int = PART_BYTES) -> Iterator[IO[bytes]]:
        with create(self, name, part_bytes) as f:
            yield _Counted(f)

    def counted_write(self, name: str, data: bytes) -> None:
        STORE_IO.written += len(data)
        write(self, name, data)

    def counted_put_file(self, local_path: str, name: str) -> None:
        STORE_IO.written += os.path.getsize(local_path)
        put_file(self, local_path, name)

    def counted_read(self, name: str) -> bytes:
        data = read(self, name)
        STORE_IO.read += len(data)
        return data

    def counted_open(self, name: str) -> IO[bytes]:
        return _Counted(open_(self, name))

    RemoteStore.create, RemoteStore.write, RemoteStore.put_file = counted_create, counted_write, counted_put_file
    RemoteStore.read, RemoteStore.open, RemoteStore._counted = counted_read, counted_open, True


def snapshot() -> Counters:
    try:
        with open("/proc/self/io") as f:
            fields = dict(line.split(": ") for line in f.read().splitlines())
    except OSError:  # not Linux
        fields = {"rchar": 0, "wchar": 0}
    return Counters(rchar=int(fields["rchar"]), wchar=int(fields["wchar"]), store_read=STORE_IO.read,
                    store_written=STORE_IO.written, sockets=_tcp_sockets())


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
    store_read_bytes: int  # to and from object stores (count_store_io)
    store_written_bytes: int
    startup_read_bytes: int
    startup_written_bytes: int
    peak_rss_bytes: int

    @property
    def total_bytes(self) -> int:
        return (self.read_bytes + self.written_bytes + self.socket_received_bytes + self.socket_sent_bytes
                + self.store_read_bytes + self.store_written_bytes)


class DriverMeter:
    """Measures a `write_dataset` call: made just before it, its `mark` passed as `on_phase`
    (the job marks "ready", start-up done, and "end", before its engine's workers exit:
    Linux adds a reaped child's I/O to its parent's counters)."""

    def __init__(self):
        count_store_io()
        self.marks = {"start": snapshot()}

    def mark(self, phase: str) -> None:
        self.marks[phase] = snapshot()

    def result(self) -> DriverIO:
        start = self.marks["start"]  # a dataset already written: no job phases, nothing measured
        return measure(start, self.marks.get("ready", start), self.marks.get("end", start))


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
