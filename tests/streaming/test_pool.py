"""A worker's item buffers are lent again only once every process has let go of them
(streaming.pool): proven by holding items while the workers go on, then checking every
held item's pixels, and by pickling a lent tensor the way a DataLoader sends it."""

from __future__ import annotations

import gc
import pickle
from multiprocessing.reduction import ForkingPickler

import pytest
import torch
from torch.utils.data import DataLoader

from streaming import VideoShardDataset, collate
from streaming.pool import SLOTS, LentTensor, Pool, worker_pool

from .test_map_dataset import check_pixels, identity

pytestmark = pytest.mark.filterwarnings("ignore:.*pin_memory.*")


def sent(tensor: torch.Tensor) -> torch.Tensor:
    """What the main process gets for a tensor a worker puts on the DataLoader's queue."""
    return pickle.loads(ForkingPickler.dumps(tensor))


def test_a_slot_is_free_only_when_the_last_tensor_over_it_goes():
    pool = Pool()
    lent = pool.lend((2, 3, 4))
    lent.fill_(7)
    got = sent(lent)
    del lent
    gc.collect()
    assert not pool.slots[0].free()  # sent: the worker's own drop does not release it
    view = got[1]
    del got
    gc.collect()
    assert not pool.slots[0].free() and int(view.sum()) == 7 * 12  # a view still holds it
    array = view.numpy()
    del view
    gc.collect()
    assert not pool.slots[0].free()  # so does a numpy array over it
    del array
    gc.collect()
    assert pool.slots[0].free()
    assert pool.lend((2, 3, 4)) is not None and len(pool.slots) == 1  # lent again, same slot


def test_a_lease_never_sent_is_released_where_it_was_made():
    pool = Pool()
    lent = pool.lend((10,))
    as_float = lent.float()  # a transform's copy: the lent buffer itself is never sent
    del lent
    gc.collect()
    assert pool.slots[0].free() and isinstance(as_float, torch.Tensor) and type(as_float) is torch.Tensor


def test_pinning_copies_and_releases():
    pool = Pool()
    lent = pool.lend((4, 4))
    lent.fill_(3)
    got = sent(lent)
    del lent
    pinned = got.pin_memory() if torch.cuda.is_available() else got.clone()
    del got
    gc.collect()
    assert pool.slots[0].free() and int(pinned.sum()) == 48


def test_every_slot_out_gives_none_and_no_slot_is_lent_twice():
    pool = Pool()
    held = [sent(pool.lend((8,))) for _ in range(SLOTS)]
    assert pool.lend((8,)) is None  # the caller makes fresh shared memory
    for i, t in enumerate(held):
        t.fill_(i)
    again = pool.lend((8,))
    assert again is None and [int(t[0]) for t in held] == list(range(SLOTS))
    del held[2]
    gc.collect()
    assert pool.lend((8,)) is not None


def test_a_second_send_of_the_same_tensor_copies():
    """Two receivers of one lease: the first to let go would free the slot under the other."""
    pool = Pool()
    lent = pool.lend((5,))
    lent.fill_(1)
    first, second = sent(lent), sent(lent)
    assert second.is_shared()  # torch's way: a copy in fresh shared memory
    del lent, first
    gc.collect()
    again = pool.lend((5,))  # (in one process torch's copy shares the worker's storage: the slot may still be out)
    if again is not None:
        again.fill_(9)  # the slot's next lease overwrites it...
    assert int(second.sum()) == 5  # ...not the second receiver's frames
    del second, again
    gc.collect()
    assert pool.slots[0].free()


def test_a_bigger_item_replaces_a_free_slot_that_is_too_small():
    pool = Pool(slots=1)
    small = pool.lend((4,))
    del small
    gc.collect()
    big = pool.lend((64,))
    assert big is not None and pool.slots[0].capacity == 64 and len(pool.slots) == 1


def lease_of(item: dict) -> dict:
    """(runs in the worker) which slot and lease the item's video is"""
    video = item["video"]
    item["meta"]["lease"] = (id(video._lease.slot), video._lease.seq) if isinstance(video, LentTensor) else None
    return item


@pytest.mark.parametrize("pin", [False, True])
def test_held_items_keep_their_frames_while_workers_reuse_slots(map_dataset, pin):
    """Every other item is kept to the end of the epoch, the rest dropped at once: the
    workers reuse the dropped items' slots, and every kept item still has its own frames."""
    here = {identity(i): i["video"].clone() for i in VideoShardDataset(map_dataset, sample="chunk", shuffle=False)}
    ds = VideoShardDataset(map_dataset, sample="chunk", shuffle=False, transform=lease_of)
    kept, leases = [], []
    for n, item in enumerate(DataLoader(ds, batch_size=None, num_workers=2, prefetch_factor=1, pin_memory=pin)):
        leases.append(item["meta"]["lease"])
        if n % 2 == 0:
            kept.append(item)
    assert len(leases) == len(here)
    assert all(lease is not None for lease in leases[:4])
    assert max(seq for _, seq in filter(None, leases)) > 1  # slots were lent again
    for item in kept:
        check_pixels(item)
        assert torch.equal(item["video"], here[identity(item)])


def test_collated_batches_come_from_the_batch_pool(map_dataset):
    def batch_kind(items):
        batch = collate(items)
        batch["lent"] = isinstance(batch["video"], LentTensor) and len(worker_pool("batch").slots) <= SLOTS
        return batch

    ds = VideoShardDataset(map_dataset, sample="segment", num_frames=3, shuffle=False, img_size=(16, 16))
    batches = list(DataLoader(ds, batch_size=3, num_workers=2, collate_fn=batch_kind))
    assert batches and batches[0]["lent"]


def test_the_receiver_keeps_a_slot_mapped_and_lets_go_when_it_is_retired():
    """The fd crosses once per slot (a socket round trip per item cost more than the pickle);
    the receiver's mapping goes once the worker retires the slot."""
    from streaming import pool as pool_module

    pool = Pool(slots=1)
    first = bytes(ForkingPickler.dumps(pool.lend((16,))))
    gc.collect()
    got = pickle.loads(first)
    token = pool.slots[0].token
    assert token in pool_module._received
    del got
    gc.collect()
    second = bytes(ForkingPickler.dumps(pool.lend((16,))))
    assert b"DupFd" in first and b"DupFd" not in second  # mapped already: no fd the second time
    got = pickle.loads(second)
    got.fill_(4)
    del got
    gc.collect()
    pool.lend((64,))  # too big for the free slot: it is retired and replaced (and this lease let go at once)
    gc.collect()
    pickle.loads(ForkingPickler.dumps(pool.lend((8,))))  # the new slot's first receipt prunes the retired one
    assert token not in pool_module._received


def test_a_slot_sent_to_a_process_without_its_fd_is_a_clear_error():
    from streaming import pool as pool_module

    pool = Pool(slots=1)
    pickle.loads(ForkingPickler.dumps(pool.lend((16,))))
    gc.collect()
    again = ForkingPickler.dumps(pool.lend((16,)))
    pool_module._received.clear()  # as in a process that never received the slot
    with pytest.raises(RuntimeError, match="never received the buffer"):
        pickle.loads(again)


def test_the_main_process_lets_go_of_the_slots_of_workers_that_ended(map_dataset):
    """Workers that are not persistent end with each epoch; the slots the main process kept
    mapped for them must not pile up epoch after epoch."""
    from streaming import pool as pool_module

    ds = VideoShardDataset(map_dataset, sample="chunk", shuffle=False, transform=mapped_in_worker)
    loader = DataLoader(ds, batch_size=None, num_workers=2)
    mapped = 0
    for _ in range(3):
        for item in loader:
            check_pixels(item)
            mapped = max(mapped, len(pool_module._received))
            assert item["meta"]["mapped_in_worker"] == 0  # a worker forked from here keeps none of its slots mapped
    del item
    gc.collect()
    assert mapped > 0 and len(pool_module._received) <= 2 * SLOTS  # the last epoch's workers' slots at most


def mapped_in_worker(item: dict) -> dict:
    from streaming import pool as pool_module

    item["meta"]["mapped_in_worker"] = len(pool_module._received)
    return item


def test_a_worker_that_keeps_a_sent_item_keeps_its_slot():
    """A transform that keeps the previous item (mixup with the last clip, a fallback item)
    holds the slot as the receiver does."""
    pool = Pool(slots=1)
    kept = pool.lend((4,))
    kept.fill_(1)
    got = sent(kept)
    del got
    gc.collect()
    assert not pool.slots[0].free() and pool.lend((4,)) is None
    assert int(kept.sum()) == 4
    del kept
    gc.collect()
    assert pool.slots[0].free()


def test_an_array_taken_before_torch_moves_the_storage_keeps_the_slot():
    """`share_memory_()` (or sending the item on through torch.multiprocessing) moves the
    received tensor's storage into torch's shared memory; a numpy array taken before still
    reads the slot, so the slot stays out while the array lives."""
    pool = Pool(slots=1)
    lent = pool.lend((4,))
    lent.fill_(1)
    got = sent(lent)
    del lent
    array = got.numpy()
    got.share_memory_()
    del got
    gc.collect()
    assert not pool.slots[0].free() and pool.lend((4,)) is None
    assert array.tolist() == [1, 1, 1, 1]
    del array
    gc.collect()
    assert pool.slots[0].free()


def test_threads_sharing_a_pool_never_get_one_slot_twice(monkeypatch):
    """VideoShardMapDataset's threads share their process's pool: the check that a slot is
    free and its lending are one step (a thread switch between them is forced here)."""
    import threading
    import time

    from streaming import pool as pool_module

    check = pool_module._Slot.free

    def slow_free(slot):
        answer = check(slot)
        time.sleep(0.01)  # another thread runs here
        return answer

    monkeypatch.setattr(pool_module._Slot, "free", slow_free)
    pool = Pool(slots=1)
    pool.lend((4,))  # made and let go: one free slot
    gc.collect()
    got = []
    threads = [threading.Thread(target=lambda: got.append(pool.lend((4,)))) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(x is None for x in got) == [False, True]


def test_plain_pickle_and_copies_of_a_lent_tensor_are_plain_tensors():
    """Only the DataLoader's pickler sends the slot: pickle.dumps, deepcopy, torch.save in a
    worker copy the values, and the slot is still sent the DataLoader's way afterwards."""
    import copy
    import io

    pool = Pool(slots=1)
    lent = pool.lend((4,))
    lent.fill_(5)
    for copied in (pickle.loads(pickle.dumps(lent)), copy.deepcopy(lent)):
        assert type(copied) is torch.Tensor and copied.tolist() == [5] * 4 and copied.data_ptr() != lent.data_ptr()
    buffer = io.BytesIO()
    torch.save({"video": lent}, buffer)
    assert torch.load(io.BytesIO(buffer.getvalue()), weights_only=True)["video"].tolist() == [5] * 4
    assert not lent._lease.sent
    assert b"DupFd" in bytes(ForkingPickler.dumps(lent))


def test_a_replacement_slot_that_cannot_be_made_leaves_the_old_one_lent(monkeypatch):
    from streaming import pool as pool_module

    pool = Pool(slots=1)
    pool.lend((4,))
    gc.collect()
    old = pool.slots[0]

    def refuse(*args):
        raise OSError(24, "Too many open files")

    monkeypatch.setattr(pool_module.os, "memfd_create", refuse)
    with pytest.raises(OSError):
        pool.lend((64,))
    assert pool.slots == [old] and old.fd >= 0 and old.free()
    lent = pool.lend((4,))
    assert lent is not None and pickle.loads(ForkingPickler.dumps(lent)).shape == (4,)


def keep_first(state: dict):
    """A transform keeping the worker's first item (as a fallback item would), checking at
    every later item that its frames did not change while it was held."""
    def transform(item):
        if "first" in state:
            item["meta"]["first_intact"] = int(state["first"]["video"].sum()) == state["sum"]
        else:
            state["first"], state["sum"] = item, int(item["video"].sum())
        return item
    return transform


def test_items_a_worker_transform_keeps_are_not_overwritten(map_dataset):
    ds = VideoShardDataset(map_dataset, sample="chunk", shuffle=False, transform=keep_first({}))
    flags = [item["meta"].get("first_intact") for item in DataLoader(ds, batch_size=None, num_workers=2)]
    assert flags.count(None) == 2 and len(flags) > 2 * SLOTS and all(f for f in flags if f is not None)


def test_held_batches_keep_their_frames_while_workers_reuse_batch_slots(map_dataset):
    here = {identity(i): i["video"].clone() for i in VideoShardDataset(map_dataset, sample="chunk", shuffle=False)}
    ds = VideoShardDataset(map_dataset, sample="chunk", shuffle=False)
    kept = []
    for n, batch in enumerate(DataLoader(ds, batch_size=2, num_workers=2, collate_fn=collate)):
        if n % 2 == 0:
            kept.append(batch)
    assert kept
    for batch in kept:
        for i, meta in enumerate(batch["meta"]):
            frames = int(batch["frame_mask"][i].sum())
            item = {"video": batch["video"][i, :, :frames], "frame_index": batch["frame_index"][i, :frames], "meta": meta}
            check_pixels(item)
            assert torch.equal(item["video"], here[identity(item)])


def _read_later(item, go, result):
    go.wait(30)
    total = int(item.sum())
    del item  # the child's own release (its header entry), under the lock the fork re-made
    gc.collect()
    result.put(total)


def forked_readers(tensor: torch.Tensor, children: int = 1):
    """Children forked now, each reading `tensor` once `go` is set and sending its sum."""
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    go, result = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_read_later, args=(tensor, go, result)) for _ in range(children)]
    for proc in procs:
        proc.start()
    return go, result, procs


def reuse_while_children_read(pool: Pool, go, result, procs) -> list[int]:
    """Let go here, lend the slot again if it were free (and overwrite it), then let the
    children read: their sums, and the slot free once they ended."""
    gc.collect()
    again = pool.lend((4,))
    if again is not None:
        again.fill_(9)  # what a reused slot would show a child
    go.set()
    sums = [result.get(timeout=30) for _ in procs]
    for proc in procs:
        proc.join(30)
    assert again is None
    del again
    gc.collect()
    assert pool.slots[0].free()
    return sums


def test_a_child_forked_while_an_item_is_held_keeps_its_slot_until_it_ends():
    """A process forked while the main process holds an item shares the item's pages: the
    slot must not be lent again when the main process lets go, only once the child ended."""
    pool = Pool(slots=1)
    lent = pool.lend((4,))
    lent.fill_(1)
    got = sent(lent)
    del lent
    readers = forked_readers(got)
    del got
    assert reuse_while_children_read(pool, *readers) == [4]


def test_workers_forked_while_other_workers_live_keep_none_of_their_slots_mapped(map_dataset):
    first = DataLoader(VideoShardDataset(map_dataset, sample="chunk", shuffle=False), batch_size=None, num_workers=1,
                       persistent_workers=True)
    assert sum(1 for _ in first) > 0  # the main process now keeps the first loader's slots mapped
    from streaming import pool as pool_module

    assert pool_module._received
    second = VideoShardDataset(map_dataset, sample="chunk", shuffle=False, transform=mapped_in_worker)
    assert {item["meta"]["mapped_in_worker"] for item in DataLoader(second, batch_size=None, num_workers=1)} == {0}


def test_a_child_the_worker_forks_while_it_holds_a_lease_keeps_the_slot():
    """A worker's own lease (a transform that forks a pool of processes) is held by its
    children just the same."""
    pool = Pool(slots=1)
    lent = pool.lend((4,))
    lent.fill_(2)
    readers = forked_readers(lent)
    del lent
    assert reuse_while_children_read(pool, *readers) == [8]


def test_many_children_forked_while_an_item_is_held_release_it_once_they_end():
    pool = Pool(slots=1)
    lent = pool.lend((4,))
    lent.fill_(3)
    got = sent(lent)
    del lent
    readers = forked_readers(got, children=12)
    del got
    assert reuse_while_children_read(pool, *readers) == [12] * 12
