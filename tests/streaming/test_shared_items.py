"""Items reach the training process without a copy of their pixels: in a DataLoader worker
the item's video is decoded straight into shared memory (and a collated batch is made there),
so pickling it sends a handle; in-process the decoder's buffer is reused instead. Proven
from pixels that the items are the in-process items."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader

from streaming import VideoShardDataset, VideoShardMapDataset, collate
from streaming.pool import LentTensor, Pool, ValueTensor

from .test_map_dataset import check_pixels, identity

pytestmark = pytest.mark.filterwarnings("ignore:.*pin_memory.*")


def in_shared_memory(tensor: torch.Tensor) -> bool:
    """torch's shared memory, or a slot of the worker's pool (a memfd: torch does not know it)."""
    return tensor.is_shared() or isinstance(tensor, LentTensor)


def mark_shared(item: dict) -> dict:
    """(runs where the item is made: in the worker)"""
    item["meta"]["shared"] = in_shared_memory(item["video"])
    return item


def shared_collate(items: list[dict]) -> dict:
    batch = collate(items)
    batch["shared"] = in_shared_memory(batch["video"]) and isinstance(batch["frame_index"], ValueTensor)
    return batch


@pytest.mark.parametrize("mode, kw", [("chunk", {}), ("segment", {"num_frames": 25}), ("clip", {"num_frames": 4})])
def test_worker_items_are_made_in_shared_memory(map_dataset, mode, kw):
    """segment mode with 25 frames of segments shorter than that: repeated indices, expanded in shared memory too."""
    here = {identity(i): i for i in VideoShardDataset(map_dataset, sample=mode, shuffle=False, **kw)}
    ds = VideoShardDataset(map_dataset, sample=mode, shuffle=False, transform=mark_shared, **kw)
    got = list(DataLoader(ds, batch_size=None, num_workers=2, pin_memory=True))
    assert len(got) == len(here) and all(item["meta"]["shared"] for item in got)
    for item in got:
        check_pixels(item)
        assert torch.equal(item["video"], here[identity(item)]["video"])
    assert not any(i["video"].is_shared() for i in here.values())  # in-process: the reused private buffer


def test_worker_batches_are_collated_in_shared_memory(map_dataset):
    ds = VideoShardDataset(map_dataset, sample="segment", num_frames=3, shuffle=False, img_size=(16, 16))
    batches = list(DataLoader(ds, batch_size=3, num_workers=2, collate_fn=shared_collate, pin_memory=True))
    assert batches and all(b["shared"] for b in batches)
    assert sum(len(b["meta"]) for b in batches) == len(ds)
    assert collate([next(iter(ds))])["video"].is_shared() is False  # outside a worker: ordinary memory


def test_map_dataset_items_from_workers_are_shared(map_dataset):
    ds = VideoShardMapDataset(map_dataset, sample="chunk", transform=mark_shared)
    got = list(DataLoader(ds, batch_size=None, num_workers=2, shuffle=True))
    assert len(got) == len(ds) and all(item["meta"]["shared"] for item in got)
    for item in got:
        check_pixels(item)


def test_a_full_dev_shm_stops_the_epoch_never_skips_samples(map_dataset, monkeypatch):
    """Shared memory the node cannot give (Docker's 64 MB /dev/shm) is the machine's, not a
    sample's: under on_error="skip" it must stop the loader naming /dev/shm, not skip items
    (a quietly smaller dataset that changes from epoch to epoch)."""
    def full(self):
        raise RuntimeError("unable to allocate shared memory(shm) for file </torch_1_2_3>: No space left on device (28)")

    monkeypatch.setattr(torch.Tensor, "share_memory_", full)  # inherited by the forked workers
    monkeypatch.setattr(Pool, "lend", lambda self, shape: None)  # every slot of the pool out: fresh shared memory
    ds = VideoShardDataset(map_dataset, sample="chunk", shuffle=False, on_error="skip")
    with pytest.raises(RuntimeError, match=r"shared memory \(/dev/shm\) cannot take a \d+-byte item .* --shm-size"):
        list(DataLoader(ds, batch_size=None, num_workers=2))


def test_in_process_the_loop_holds_one_item_while_the_next_is_made_in_the_other_buffer(map_dataset):
    """`for item in ds:` holds the previous item while the next one is decoded: two buffers
    take turns (a fresh one per item would page-fault every byte), and the item held is never
    the one written; an item kept longer is the consumer's, never reused."""
    kept, previous, pointers = [], None, []
    for n, item in enumerate(VideoShardDataset(map_dataset, sample="chunk", shuffle=False)):
        if previous is not None:
            check_pixels(previous)  # intact while this one was made
        pointers.append(item["video"].data_ptr())
        if n == 3:
            kept.append(item)
        previous = item
    assert len(set(pointers[:3])) == 2 and pointers[2] == pointers[0]  # turns: a, b, a
    assert pointers[4] not in (pointers[3],) and len(set(pointers)) <= 4
    check_pixels(kept[0])
