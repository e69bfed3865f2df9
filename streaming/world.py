"""Where this process sits: rank among ranks, worker among DataLoader workers.

Detected once, at the edge (`World.detect()` at the start of an epoch's iteration); every
planner takes it as a plain value.
"""

from __future__ import annotations

import dataclasses
import os


@dataclasses.dataclass(frozen=True, kw_only=True)
class World:
    rank: int = 0
    world_size: int = 1
    worker: int = 0
    num_workers: int = 1
    in_worker: bool = False  # a DataLoader worker process: its items reach the main process through shared memory

    def __post_init__(self):
        if not (0 <= self.rank < self.world_size and 0 <= self.worker < self.num_workers):
            raise ValueError(f"inconsistent world {self}")

    @classmethod
    def detect(cls) -> World:
        """torch.distributed when initialised, else torchrun's RANK/WORLD_SIZE; the
        DataLoader worker from torch.utils.data.get_worker_info()."""
        import torch.distributed as dist
        from torch.utils.data import get_worker_info

        if dist.is_available() and dist.is_initialized():
            rank, world_size = dist.get_rank(), dist.get_world_size()
        else:
            rank, world_size = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
        info = get_worker_info()
        worker, num_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        return cls(rank=rank, world_size=world_size, worker=worker, num_workers=num_workers, in_worker=info is not None)
