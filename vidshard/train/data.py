"""The training example's data: the streaming dataset (`data.sampler: stream`, the default) or
the map-style dataset under a class-balanced sampler (`data.sampler: balanced`).

Balanced: each rank draws `len(ds) // world` items per epoch with replacement, item i with
probability proportional to 1 / (items of its label), so every label of the training
videos is drawn about equally often (labels from index.json: `VideoShardMapDataset.label_ids`).
The draws are a function of (seed, epoch, rank), so StatefulDataLoader's resume (which
replays the sampler and skips what was delivered) continues an epoch exactly on the same
world shape; see docs/training.md.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import WeightedRandomSampler

SAMPLERS = ("stream", "balanced")
_SAMPLER_STREAM = 6  # RNG stream id of the balanced sampler's draws


def inverse_frequency(label_ids: np.ndarray) -> np.ndarray:
    """Per item, 1 / (items with its label); items without a label (-1) are a group of their own."""
    _, group, counts = np.unique(label_ids, return_inverse=True, return_counts=True)
    return 1.0 / counts[group]


class EpochWeightedSampler(WeightedRandomSampler):
    """WeightedRandomSampler (with replacement) whose draws depend on (seed, epoch, rank) only:
    iterating twice in one epoch gives the same items, a new epoch new ones."""

    def __init__(self, weights: np.ndarray, num_samples: int, *, seed: int, rank: int = 0):
        super().__init__(torch.as_tensor(weights, dtype=torch.double), num_samples, replacement=True)
        self.seed, self.rank, self.epoch = seed, rank, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        draw = np.random.default_rng([self.seed, self.epoch, _SAMPLER_STREAM, self.rank]).integers(2**63)
        self.generator = torch.Generator().manual_seed(int(draw))
        return super().__iter__()
