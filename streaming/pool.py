"""Item buffers a DataLoader worker reuses once every process has let go of them.

Why: a worker that decodes each item into fresh shared memory first pays the kernel to zero
every page of it (on the 2-core VM of docs/performance.md about 20 ms per 34 MB, as much as
decoding a chunk item), while one in-process core reuses one buffer and pays none of it. A
worker cannot just reuse a buffer: the main process holds the item it was sent, and a buffer
overwritten while held is a silently wrong frame. So whoever drops the last tensor over a
buffer says so, and only then is it lent again (DALI and FFCV reuse output buffers on a
promise that the user let go; here nothing is promised, it is observed).

A slot is a memfd (anonymous shared memory: it goes with the last process that maps it, is
never left behind in /dev/shm, and is not bounded by Docker's small /dev/shm) whose header
holds counters both processes read: `sent`, the number of the latest lease, written by the
worker when it lends the slot, and `released`, written when that lease's last tensor is
freed. Pickling a lent tensor (the DataLoader sending the item) sends the slot's token and
the lease number, and the first time the slot's fd, as torch's own file_descriptor strategy
does (multiprocessing's DupFd: a socket round trip that costs more than the pickle itself,
so the receiver keeps the slot mapped and says so in the header). Unpickling makes a tensor
over a numpy array whose finalizer writes `released`: torch frees a tensor's numpy array
exactly when the last tensor over that storage goes (views, slices, `.numpy()` arrays keep
it; `pin_memory()` copies and lets it go; a storage moved to shared memory by torch swaps
its pointer and lets it go). A lease never sent is released the same way in the worker. A
slot is lent again only when released == sent; when every slot is out (the consumer keeps
items, a lease was lost) the caller makes fresh shared memory as before: never a wait,
never a reuse on a guess. The receiver lets go of a slot's mapping once the worker retires
it (replaced by a bigger one, or the worker exited) or the worker is gone.
"""

from __future__ import annotations

import mmap
import multiprocessing.util
import os
import weakref
from collections import Counter
from multiprocessing.reduction import DupFd

import numpy as np
import torch
from torch.multiprocessing.reductions import reduce_tensor

HEADER = 64  # bytes before the data: the counters below (int64 each); 64 keeps the data cache-line aligned
SENT, RELEASED, RECEIVER, RETIRED, OWNER = range(5)  # RECEIVER: the pid that keeps the slot mapped (0: none yet)
SLOTS = 4  # per worker and kind: prefetch_factor (2 by default) items queued or being made + the item the loop holds + the next


class _Slot:
    def __init__(self, capacity: int):
        self.capacity = capacity
        self.size = HEADER + capacity
        self.token = os.urandom(16)  # names the slot to the receiver: a pid and a count would repeat after pid reuse
        self.fd = os.memfd_create("vidshard-item", os.MFD_CLOEXEC)
        try:
            os.ftruncate(self.fd, self.size)
            self.map = mmap.mmap(self.fd, self.size)
        except OSError:
            os.close(self.fd)
            raise
        self.counters = np.frombuffer(self.map, dtype=np.int64, count=5)
        self.counters[OWNER] = os.getpid()

    def free(self) -> bool:
        return bool(self.counters[SENT] == self.counters[RELEASED])

    def retire(self) -> None:
        """Never lent again: the fd closed, the receiver told to let go of its mapping. The
        mapping here goes when the last array over it does (an old lease's tensor still held
        in this process keeps it valid, never dangling)."""
        if self.fd >= 0:
            self.counters[RETIRED] = 1
            os.close(self.fd)
            self.fd = -1


class _Lease:
    """One loan of a slot: released when its last tensor goes, unless it was sent, in which
    case the receiving process releases it."""

    def __init__(self, slot: _Slot, seq: int, nbytes: int):
        self.slot, self.seq, self.nbytes, self.sent = slot, seq, nbytes, False
        self.address = 0

    def drop(self) -> None:
        if not self.sent:
            self.slot.counters[RELEASED] = self.seq


class LentTensor(torch.Tensor):
    """A tensor over a lent slot. Operations on it give plain tensors (a view of it that is
    pickled goes torch's way: copied into fresh shared memory, and the slot released)."""

    __torch_function__ = torch._C._disabled_torch_function_impl
    _lease: _Lease

    def __reduce_ex__(self, protocol):
        lease = self._lease
        if lease.sent or self.data_ptr() != lease.address or not self.is_contiguous() or self.nbytes != lease.nbytes:
            # Sent before (a second receiver would release the slot under the first), or no
            # longer the slot's whole buffer: torch's own path, which copies.
            return reduce_tensor(self.as_subclass(torch.Tensor))
        lease.sent = True
        slot = lease.slot
        fd = DupFd(slot.fd) if slot.counters[RECEIVER] == 0 else None  # the receiver has it mapped already
        return _attach, (slot.token, fd, slot.size, lease.seq, tuple(self.shape))


_received: dict[bytes, mmap.mmap] = {}  # token -> mapping, in the receiving process


def _release(counters: np.ndarray, seq: int) -> None:
    counters[RELEASED] = seq
    _forget_retired()


def _attach(token: bytes, fd_handle, size: int, seq: int, shape: tuple[int, ...]) -> torch.Tensor:
    """The receiving side: a plain tensor over the slot that releases the lease when it (and
    every view of it) is freed."""
    mapping = _received.get(token)
    if fd_handle is not None:
        fd = fd_handle.detach()  # always taken: a DupFd left waiting would hold the fd in the worker for good
        try:
            if mapping is None:
                mapping = mmap.mmap(fd, size)
        finally:
            os.close(fd)
    if mapping is None:
        raise RuntimeError("an item's shared buffer reached a process that never received the buffer itself: items of "
                           "vidshard's DataLoader workers are read by the process that iterates the DataLoader")
    counters = np.frombuffer(mapping, dtype=np.int64, count=5)
    if token not in _received:
        _forget_retired()
        _received[token] = mapping
        counters[RECEIVER] = os.getpid()
    array = np.frombuffer(mapping, dtype=np.uint8, count=int(np.prod(shape)), offset=HEADER)
    weakref.finalize(array, _release, counters, seq)
    return torch.from_numpy(array).view(shape)


def _forget_retired() -> None:
    """Let go of the mappings of slots their worker retired or that outlived their worker
    (items still held keep their own mapping alive)."""
    for token, mapping in list(_received.items()):
        counters = np.frombuffer(mapping, dtype=np.int64, count=5)
        if counters[RETIRED] or not _alive(int(counters[OWNER])):
            _received.pop(token, None)  # (also called from finalizers: another call may have taken it)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process now has the pid: ours is gone
        return False
    return True


class Pool:
    """A worker's slots of one kind (items, or collated batches: their sizes differ)."""

    def __init__(self, slots: int = SLOTS):
        self.limit = slots
        self.slots: list[_Slot] = []
        # A DataLoader worker ends through multiprocessing's exit (no atexit): its finalizers
        # run there, and tell the receiver to let go of this pool's slots.
        multiprocessing.util.Finalize(self, _retire_all, args=(self.slots,), exitpriority=0)

    def lend(self, shape: tuple[int, ...]) -> LentTensor | None:
        """An uninitialised uint8 tensor over a free slot, or None when every slot is out."""
        nbytes = int(np.prod(shape))
        free = [s for s in self.slots if s.free()]
        fits = [s for s in free if s.capacity >= nbytes]
        if fits:
            slot = min(fits, key=lambda s: s.capacity)
        elif len(self.slots) < self.limit:
            slot = _Slot(nbytes)
            self.slots.append(slot)
        elif free:  # a free slot too small for this item: replaced by one that fits
            old = max(free, key=lambda s: s.capacity)
            old.retire()
            slot = self.slots[self.slots.index(old)] = _Slot(nbytes)
        else:
            return None
        lease = _Lease(slot, int(slot.counters[SENT]) + 1, nbytes)
        slot.counters[SENT] = lease.seq
        array = np.frombuffer(slot.map, dtype=np.uint8, count=nbytes, offset=HEADER)
        weakref.finalize(array, lease.drop)
        tensor = torch.from_numpy(array).view(shape).as_subclass(LentTensor)
        lease.address = tensor.data_ptr()
        tensor._lease = lease
        return tensor


def _retire_all(slots: list[_Slot]) -> None:
    for slot in slots:
        slot.retire()


SMALL = 64 << 10  # bytes: a tensor this small crosses to the main process by value (see by_value)
_BY_VALUE = {torch.uint8, torch.bool, torch.int32, torch.int64, torch.float16, torch.float32, torch.float64}


class ValueTensor(torch.Tensor):
    """A small tensor pickled by value: torch's own way for any tensor makes a shared-memory
    file and passes its fd (about 0.7 ms per tensor here, both processes together) where
    pickling 128 bytes of frame indices takes 20 us."""

    __torch_function__ = torch._C._disabled_torch_function_impl

    def __reduce_ex__(self, protocol):
        return torch.from_numpy, (self.as_subclass(torch.Tensor).numpy(),)


def by_value(tree):
    """`tree` (an item or a batch: dicts, lists, tensors) with its small tensors marked to
    cross to the main process by value; other values as they are."""
    if isinstance(tree, dict):
        return {k: by_value(v) for k, v in tree.items()}
    if isinstance(tree, list):
        return [by_value(v) for v in tree]
    if type(tree) is torch.Tensor and tree.nbytes <= SMALL and tree.dtype in _BY_VALUE and not tree.requires_grad:
        return tree.as_subclass(ValueTensor)
    return tree


_pools: dict[tuple[int, str], Pool] = {}


def worker_pool(kind: str) -> Pool:
    """This process's pool of `kind` ("item", "batch"): keyed by pid, so a forked worker never
    lends its parent's slots."""
    key = (os.getpid(), kind)
    if key not in _pools:
        _pools[key] = Pool()
    return _pools[key]


def shared_tensor(shape: tuple[int, ...], kind: str, stats: Counter | None = None) -> torch.Tensor:
    """An uninitialised uint8 tensor in shared memory: a slot of this worker's `kind` pool
    (stats "shared_lent"), or fresh when every slot is out (stats "shared_fresh")."""
    try:
        lent = worker_pool(kind).lend(shape)
    except OSError:  # memfd_create or mmap refused (out of fds, of address space): torch's way below says why, if it fails too
        lent = None
    if stats is not None:
        stats["shared_lent" if lent is not None else "shared_fresh"] += 1
    if lent is not None:
        return lent
    try:
        tensor = torch.empty(shape, dtype=torch.uint8)
    except RuntimeError as exc:  # torch's allocator: "can't allocate memory"
        raise MemoryError(str(exc)) from None
    try:
        tensor.share_memory_()
    except RuntimeError as exc:  # the node's shared memory, not the sample: never a skip
        raise RuntimeError(f"shared memory (/dev/shm) cannot take a {tensor.numel()}-byte {kind} ({exc}): give the DataLoader "
                           "workers more (docker run --shm-size, a larger /dev/shm), or use fewer workers or a smaller "
                           "img_size / max_video_frames") from None
    return tensor
