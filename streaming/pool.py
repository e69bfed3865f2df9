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
over a numpy array and releases the lease once both that array and the tensor's storage
are freed. Normally they go together, when the last tensor over the storage goes (views,
slices, `.numpy()` arrays, a storage set into another tensor keep it; `pin_memory()` copies
and lets it go). But torch can move a storage to its own shared memory (`share_memory_()`,
sending the item on through torch.multiprocessing): the array goes, the storage lives on
with new memory, and a `.numpy()` array taken before the move still reads the slot; its base
keeps the storage, so the slot stays out until that storage goes (storages keep their
Python object while they live, so a finalizer on it fires exactly then). The worker counts
its own hold the same way (a transform that keeps a sent item keeps the slot), and a slot
is lent again only once both sides let go. When every slot is out (the consumer keeps items, a
lease was lost) the caller makes fresh shared memory as before: never a wait, never a reuse
on a guess. The receiver lets go of a slot's mapping once the worker retires it (replaced by
a bigger one, or the worker exited) or the worker is gone: checked whenever an item arrives
or is let go. A child forked while the receiver holds an item shares the item's pages: it
takes an entry in the slot's header (reserved before the fork, its pid written in the child),
and the slot is lent again only once the child has ended or let go of its copy.

Only the DataLoader's pickler (multiprocessing's ForkingPickler, as torch's own reducers)
sends a slot; `pickle.dumps`, `copy.deepcopy` or `torch.save` of a lent tensor copy its values.
"""

from __future__ import annotations

import mmap
import multiprocessing.util
import os
import threading
import weakref
from collections import Counter
from multiprocessing.reduction import DupFd, ForkingPickler

import numpy as np
import torch
from torch.multiprocessing.reductions import reduce_tensor
from torch.utils.data import get_worker_info

HEADER = 512  # bytes before the data: the counters below (int64 each); a multiple of 64 keeps the data cache-line aligned
SENT, RELEASED, RECEIVER, RETIRED, OWNER, PINNED = range(6)  # RECEIVER: the pid that keeps the slot mapped (0: none yet)
FORKS = slice(8, HEADER // 8)  # 56 children forked while the slot was held: -1 while forking, then the child's pid
SLOTS = 4  # per worker and kind: prefetch_factor (2 by default) items queued or being made + the item the loop holds + the next


class _Slot:
    def __init__(self, capacity: int):
        self.capacity = capacity
        self.size = HEADER + capacity
        self.token = os.urandom(16)  # names the slot to the receiver: a pid and a count would repeat after pid reuse
        self.fd = os.memfd_create("vidshard-item", os.MFD_CLOEXEC)
        try:
            os.ftruncate(self.fd, self.size)
            # Pages now, not at first touch: memory the node cannot give is an OSError here
            # (the caller falls back to torch's shared memory, which says why), not a SIGBUS
            # in the middle of a decode. The slot is reused: this is paid once.
            os.posix_fallocate(self.fd, 0, self.size)
            self.map = mmap.mmap(self.fd, self.size)
        except OSError:
            os.close(self.fd)
            raise
        self.counters = np.frombuffer(self.map, dtype=np.int64, count=HEADER // 8)
        self.counters[OWNER] = os.getpid()
        self.lease: _Lease | None = None  # the latest lease (this process's view of it)

    def free(self) -> bool:
        lease = self.lease
        if lease is None:
            return True
        if lease.holds or (lease.sent and self.counters[RELEASED] != lease.seq) or self.counters[PINNED]:
            return False
        return not self._forked_holders()

    def _forked_holders(self) -> bool:
        """Whether a child forked while this slot was held may still read it (the entries of
        children that ended are cleared here)."""
        entries = self.counters[FORKS]
        held = False
        for i in np.flatnonzero(entries).tolist():
            pid = int(entries[i])
            if pid == -1 or _alive(pid):
                held = True
            else:
                entries[i] = 0
        return held

    def retire(self) -> None:
        """Never lent again: the fd closed, the receiver told to let go of its mapping. The
        mapping here goes when the last array over it does (an old lease's tensor still held
        in this process keeps it valid, never dangling)."""
        if self.fd >= 0:
            self.counters[RETIRED] = 1
            os.close(self.fd)
            self.fd = -1


class _Hold:
    """Something alive in this process that reads a slot: a worker's lease, a receiver's
    receipt. `holds` counts what of it is alive (the numpy array under the storage, the
    storage); at 0, `released()`. A child forked while it is held shares the slot's pages:
    it takes an entry in the slot's header (`_before_fork`), cleared when its copy goes or
    when the worker finds the child ended."""

    def __init__(self, counters: np.ndarray):
        self.counters, self.holds = counters, 2
        self.pid = os.getpid()  # the holder; in a forked child this copy is the child's
        self.forking: int | None = None  # the FORKS entry reserved while a fork is under way
        self.entry: int | None = None  # in a forked child: its own FORKS entry

    def over(self, array: np.ndarray, shape: tuple[int, ...]) -> torch.Tensor:
        """A tensor over `array` that this hold watches: made and registered under
        `_holding`, so no fork falls between them (`_before_fork`)."""
        with _holding:
            tensor = torch.from_numpy(array).view(shape)
            weakref.finalize(array, self.let_go)
            weakref.finalize(tensor.untyped_storage(), self.let_go)
            _held.add(self)
        return tensor

    def let_go(self) -> None:
        with _holding:
            self.holds -= 1
            if self.holds:
                return
            _held.discard(self)
        if os.getpid() == self.pid:
            self.released()
        elif self.entry is not None and self.counters[self.entry] == os.getpid():
            self.counters[self.entry] = 0  # a forked child's copy: its own hold only

    def released(self) -> None:
        pass


class _Lease(_Hold):
    """One loan of a slot, as the worker sees it: free again once its holds are 0 and, if
    `sent` by the DataLoader's pickler, the receiver released it (`_Slot.free`)."""

    def __init__(self, slot: _Slot, seq: int, nbytes: int):
        super().__init__(slot.counters)
        self.slot, self.seq, self.nbytes, self.sent = slot, seq, nbytes, False
        self.address = 0


class _Marked(torch.Tensor):
    """A plain tensor marked for the DataLoader's pickler (its reducer is registered there).
    Operations on it give plain tensors; any other pickle or copy is a plain tensor's."""

    __torch_function__ = torch._C._disabled_torch_function_impl

    def __reduce_ex__(self, protocol):
        return self.as_subclass(torch.Tensor).__reduce_ex__(protocol)

    def __deepcopy__(self, _memo):
        return self.as_subclass(torch.Tensor).clone()


class LentTensor(_Marked):
    """A tensor over a lent slot (a view of it that is pickled goes torch's way: copied into
    fresh shared memory)."""

    _lease: _Lease


def _reduce_lent(tensor: LentTensor):
    """The DataLoader's pickler: the slot's token, and its fd the first time."""
    lease = getattr(tensor, "_lease", None)
    if (lease is None or lease.sent or tensor.data_ptr() != lease.address or not tensor.is_contiguous()
            or tensor.nbytes != lease.nbytes or lease.slot.fd < 0):
        # Sent before (a second receiver would release the slot under the first), not the
        # slot's whole buffer, or a copy made by plain pickle: torch's own path, which copies.
        return reduce_tensor(tensor.as_subclass(torch.Tensor))
    lease.sent = True
    slot = lease.slot
    fd = DupFd(slot.fd) if slot.counters[RECEIVER] == 0 else None  # the receiver has it mapped already
    return _attach, (slot.token, fd, slot.size, lease.seq, tuple(tensor.shape))


ForkingPickler.register(LentTensor, _reduce_lent)


_received: dict[bytes, mmap.mmap] = {}  # token -> mapping, in the receiving process
_holding = threading.RLock()  # finalizers of one lease may run in two threads; reentrant: a GC inside may run another


class _Receipt(_Hold):
    """The receiver's hold on one lease: released once the numpy array under the storage and
    the storage itself are both gone (see the module's docstring)."""

    def __init__(self, counters: np.ndarray, seq: int):
        super().__init__(counters)
        self.seq = seq

    def released(self) -> None:
        # (On x86 this store cannot pass the earlier reads of the pixels; on weakly ordered
        # CPUs the protocol leans on the interpreter's own locking between the last read and
        # a finalizer to order them.)
        self.counters[RELEASED] = self.seq
        _forget_retired()


_held: set[_Hold] = set()  # leases and receipts alive in this process


def _before_fork() -> None:
    """A child about to be forked will share the pages of every item held here: reserve it
    an entry in each such slot's header, so the worker lends none of them again until the
    child has ended (no entry left: the slot is pinned, never lent again). `_holding` is held
    across the fork: no other thread is half-way through a release when the child is made."""
    _holding.acquire()
    _forget_retired()
    for held in list(_held):
        entries = held.counters[FORKS]
        free = np.flatnonzero(entries == 0)
        if len(free):
            entries[free[0]] = -1
            held.forking = FORKS.start + int(free[0])
        else:
            held.counters[PINNED] = 1


def _after_fork_in_parent() -> None:
    for held in list(_held):
        held.forking = None  # the child writes its pid there (a fork that failed leaves the entry held: a slot lost)
    _holding.release()


def _after_fork_in_child() -> None:
    global _holding
    _holding = threading.RLock()  # the parent's, held across the fork by a thread the child does not have
    _received.clear()  # not this process's to keep mapped; items it inherited keep their own mapping
    for held in list(_held):
        if held.forking is not None:
            held.entry, held.forking = held.forking, None
            held.counters[held.entry] = os.getpid()


os.register_at_fork(before=_before_fork, after_in_parent=_after_fork_in_parent, after_in_child=_after_fork_in_child)


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
    counters = np.frombuffer(mapping, dtype=np.int64, count=HEADER // 8)
    if token not in _received:
        _forget_retired()
        _received[token] = mapping
        counters[RECEIVER] = os.getpid()
    array = np.frombuffer(mapping, dtype=np.uint8, count=int(np.prod(shape)), offset=HEADER)
    return _Receipt(counters, seq).over(array, shape)


def _forget_retired() -> None:
    """Let go of the mappings of slots their worker retired or that outlived their worker
    (items still held keep their own mapping alive)."""
    for token, mapping in list(_received.items()):
        counters = np.frombuffer(mapping, dtype=np.int64, count=HEADER // 8)
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
        self.lock = threading.Lock()  # threads of one process (VideoShardMapDataset's) share its pool
        # A DataLoader worker ends through multiprocessing's exit (no atexit): its finalizers
        # run there, and tell the receiver to let go of this pool's slots.
        multiprocessing.util.Finalize(self, _retire_all, args=(self.slots,), exitpriority=0)

    def lend(self, shape: tuple[int, ...]) -> LentTensor | None:
        """An uninitialised uint8 tensor over a free slot, or None when every slot is out."""
        nbytes = int(np.prod(shape))
        with self.lock:
            free = [s for s in self.slots if s.free()]
            fits = [s for s in free if s.capacity >= nbytes]
            if fits:
                slot = min(fits, key=lambda s: s.capacity)
            elif len(self.slots) < self.limit:
                slot = _Slot(nbytes)
                self.slots.append(slot)
            elif free:  # a free slot too small for this item: replaced by one that fits (made first: it may fail)
                old = max(free, key=lambda s: s.capacity)
                slot = _Slot(nbytes)
                old.retire()
                self.slots[self.slots.index(old)] = slot
            else:
                return None
            lease = slot.lease = _Lease(slot, int(slot.counters[SENT]) + 1, nbytes)
            slot.counters[SENT] = lease.seq
        array = np.frombuffer(slot.map, dtype=np.uint8, count=nbytes, offset=HEADER)
        tensor = lease.over(array, shape).as_subclass(LentTensor)
        lease.address = tensor.data_ptr()
        tensor._lease = lease
        return tensor


def _retire_all(slots: list[_Slot]) -> None:
    for slot in slots:
        slot.retire()


SMALL = 64 << 10  # bytes: a tensor this small crosses to the main process by value (see by_value)
_BY_VALUE = {torch.uint8, torch.bool, torch.int32, torch.int64, torch.float16, torch.float32, torch.float64}


class ValueTensor(_Marked):
    """A small tensor pickled by value: torch's own way for any tensor makes a shared-memory
    file and passes its fd (about 0.7 ms per tensor here, both processes together) where
    pickling 128 bytes of frame indices takes 20 us."""


def _reduce_value(tensor: ValueTensor):
    return torch.from_numpy, (tensor.as_subclass(torch.Tensor).numpy(),)


ForkingPickler.register(ValueTensor, _reduce_value)


def for_the_queue(tree):
    """What a DataLoader worker hands over: `tree` with its small tensors marked to cross by
    value (in a worker: applied after the user's transform, which sees plain tensors)."""
    return by_value(tree) if get_worker_info() is not None else tree


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
