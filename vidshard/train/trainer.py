"""`vidshard train --config configs/config_chunked_loading.yaml`: the chunked-loading training
example, single process or under torchrun (DDP: gloo on CPU, nccl on GPU).

Segments of chunks are classified over the manifest's label vocabulary. Validation videos
are split off by VIDEO (chunks of one video never land on both sides). A checkpoint holds
the model, the optimizer, every rank's loader state and the step; `--resume` continues
mid-epoch on the same world shape (StatefulDataLoader state) or on another one (the merged
progress, see streaming/resume.py).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import random
import time
import warnings

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torchdata.stateful_dataloader import StatefulDataLoader

from streaming.collation import collate
from streaming.dataset import VideoShardDataset
from streaming.format import video_of
from streaming.mapped import VideoShardMapDataset
from streaming.resume import continued_progress, merge_loader_states
from streaming.options import load_index

from .config import Config, ConfigError, load_config
from .data import SAMPLERS, EpochWeightedSampler, inverse_frequency
from .model import VideoClassifier, keypoint_dim, keypoint_features, predict

log = logging.getLogger("vidshard.train")
# torchdata's StatefulDataLoader calls torch.set_vital, which this torch deprecates with a
# UserWarning on every loader: a library's notice to itself, not something a user can act on.
warnings.filterwarnings("ignore", message="'set_vital' is deprecated", category=UserWarning)


def split_videos(video_ids: list[str], val_fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """(train, val) video ids: a seeded shuffle, the first ceil(f * n) go to validation."""
    ids = sorted(set(video_ids))
    if not 0 <= val_fraction < 1:
        raise ConfigError(f"data.val_fraction must be in [0, 1), got {val_fraction}")
    order = np.random.default_rng([seed, 4]).permutation(len(ids))
    n_val = math.ceil(val_fraction * len(ids)) if val_fraction else 0
    if n_val >= len(ids):
        raise ConfigError(f"data.val_fraction {val_fraction} leaves no training video out of {len(ids)}")
    val = sorted(ids[i] for i in order[:n_val])
    return [i for i in ids if i not in set(val)], val


def setup_distributed() -> tuple[int, int, torch.device]:
    world = int(os.environ.get("WORLD_SIZE", 1))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
    rank = dist.get_rank() if dist.is_initialized() else 0
    if torch.cuda.is_available():
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    return rank, world, device


def autocast(precision, device: torch.device):
    """Mixed precision where the device supports it: fp16 on CUDA, bf16 on CPU."""
    if str(precision) in ("32", "32-true"):
        return contextlib.nullcontext()
    dtype = torch.float16 if device.type == "cuda" and str(precision) in ("16", "16-mixed") else torch.bfloat16
    return torch.autocast(device_type=device.type, dtype=dtype)


def gather(obj, world: int) -> list:
    if world == 1:
        return [obj]
    out = [None] * world
    dist.all_gather_object(out, obj)
    return out


def loader_resume(checkpoint: dict, *, rank: int, world: int, num_workers: int) -> tuple[dict | None, dict | None]:
    """(the dataset's resume_from, this rank's loader state to load) for a checkpoint.

    On the checkpoint's own shape each rank loads its own loader state, with the progress its
    epoch continued as resume_from when that epoch was itself resumed (so len(ds) counts it);
    on another shape every rank resumes from the merged progress of the epoch.
    """
    if checkpoint["world"] == [world, num_workers]:
        state = checkpoint["loader_states"][rank]
        return continued_progress(state), state
    log.info("resuming a %d-rank x %d-worker run on %d x %d", *checkpoint["world"], world, num_workers)
    return merge_loader_states(checkpoint["loader_states"]), None


class Trainer:
    def __init__(self, cfg: Config, shards: str, resume: str | None = None):
        self.cfg, self.shards = cfg, shards
        self.rank, self.world, self.device = setup_distributed()
        torch.manual_seed(cfg.data.seed)
        random.seed(cfg.data.seed)
        d = cfg.data
        if d.sampler not in SAMPLERS:
            raise ConfigError(f"data.sampler: {d.sampler!r} is not one of {list(SAMPLERS)}")
        self.manifest, _ = load_index(shards)
        train_ids, self.val_ids = split_videos([video_of(s.key) for sh in self.manifest.shards for s in sh.samples],
                                               d.val_fraction, d.seed)
        # Our own checkpoint, never shard content; weights_only refuses pickled code anyway.
        checkpoint = torch.load(resume, map_location="cpu", weights_only=True) if resume else None
        same_shape = checkpoint is not None and checkpoint["world"] == [self.world, d.num_workers]
        self.sampler, loader_state = None, None
        if d.sampler == "balanced":
            # Map-style: each rank draws its own items, labels equally often (vidshard/train/data.py).
            self.train_ds = self._map_dataset(train_ids)
            self.sampler = EpochWeightedSampler(inverse_frequency(self.train_ds.label_ids),
                                                max(1, len(self.train_ds) // self.world), seed=d.seed, rank=self.rank)
            if same_shape:
                loader_state = checkpoint["loader_states"][self.rank]
            elif checkpoint is not None:
                log.info("data.sampler balanced: resuming on another world shape restarts the interrupted epoch")
        else:
            resume_from, loader_state = loader_resume(checkpoint, rank=self.rank, world=self.world,
                                                      num_workers=d.num_workers) if checkpoint else (None, None)
            self.train_ds = self._dataset(train_ids, shuffle=True, resume_from=resume_from)
        self.loader = StatefulDataLoader(self.train_ds, batch_size=d.batch_size, num_workers=d.num_workers, sampler=self.sampler,
                                         collate_fn=collate, pin_memory=self.device.type == "cuda")
        views = len(self.train_ds.options.views)
        model = VideoClassifier(backbone=cfg.model.backbone, num_classes=len(self.manifest.labels), view_fusion=cfg.model.view_fusion,
                                keypoint_dim=keypoint_dim(self.manifest.keypoints, views) if d.load_kpt else 0)
        if cfg.model.weights:
            model.load_state_dict(torch.load(cfg.model.weights, map_location="cpu", weights_only=True))
        model.to(self.device)
        self.model = DistributedDataParallel(model) if self.world > 1 else model
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=cfg.train.lr)
        self.scaler = torch.amp.GradScaler(enabled=self.device.type == "cuda" and str(cfg.trainer.precision) in ("16", "16-mixed"))
        self.epoch, self.step = 0, 0
        if checkpoint:
            model.load_state_dict(checkpoint["model"])
            self.optimizer.load_state_dict(checkpoint["optimizer"])
            self.epoch, self.step = checkpoint["epoch"], checkpoint["step"]
            if loader_state is not None:  # same shape: each rank takes its own loader state
                self.loader.load_state_dict(loader_state)

    def _dataset(self, videos, shuffle, resume_from=None) -> VideoShardDataset:
        d = self.cfg.data
        return VideoShardDataset(self.shards, sample="segment", num_frames=d.num_frames or 8, img_size=d.img_size, views=d.views,
                                 load_rgb=True, load_kpt=d.load_kpt, shuffle=shuffle, seed=d.seed,
                                 shuffle_buffer=d.shuffle_buffer, videos=videos, resume_from=resume_from)

    def _map_dataset(self, videos) -> VideoShardMapDataset:
        d = self.cfg.data
        return VideoShardMapDataset(self.shards, sample="segment", num_frames=d.num_frames or 8, img_size=d.img_size,
                                    views=d.views, load_rgb=True, load_kpt=d.load_kpt, seed=d.seed, videos=videos)

    def _start_epoch(self) -> int:
        """Tell the data the epoch; the items this rank yields in it."""
        self.train_ds.set_epoch(self.epoch)
        if self.sampler is not None:
            self.sampler.set_epoch(self.epoch)
            return len(self.sampler)
        return len(self.train_ds)

    def _loss(self, batch) -> torch.Tensor:
        video = batch["video"].to(self.device, non_blocking=True)
        kwargs = {}
        if self.cfg.data.load_kpt:
            kwargs = {"keypoints": keypoint_features(batch).to(self.device),
                      "keypoints_mask": batch["keypoints_mask"].to(self.device)}
        with autocast(self.cfg.trainer.precision, self.device):
            logits = self.model(video, **kwargs)
        return nn.functional.cross_entropy(logits.float(), batch["label_id"].to(self.device))

    def save(self, path: str) -> None:
        loader_states = gather(self.loader.state_dict(), self.world)  # every rank's partitions
        if self.rank == 0:
            model = self.model.module if isinstance(self.model, DistributedDataParallel) else self.model
            state = {"model": model.state_dict(), "optimizer": self.optimizer.state_dict(), "epoch": self.epoch,
                     "step": self.step, "world": [self.world, self.cfg.data.num_workers], "loader_states": loader_states}
            tmp = path + ".partial"
            torch.save(state, tmp)
            os.replace(tmp, path)

    def validate(self) -> float | None:
        if not self.val_ids:
            return None
        ds = self._dataset(self.val_ids, shuffle=False)
        loader = torch.utils.data.DataLoader(ds, batch_size=self.cfg.data.batch_size, collate_fn=collate)
        correct = total = 0
        self.model.eval()
        with torch.no_grad():
            for batch in loader:
                video = batch["video"].to(self.device)
                kwargs = {}
                if self.cfg.data.load_kpt:
                    kwargs = {"keypoints": keypoint_features(batch).to(self.device), "keypoints_mask": batch["keypoints_mask"].to(self.device)}
                with autocast(self.cfg.trainer.precision, self.device):
                    pred = predict(self.model, video, self.cfg.train.video_batch_size, **kwargs).argmax(-1).cpu()
                real = ~torch.tensor([m["padded"] for m in batch["meta"]])
                correct += int(((pred == batch["label_id"]) & real).sum())
                total += int(real.sum())
        self.model.train()
        counts = torch.tensor([correct, total], dtype=torch.float64)
        if self.world > 1:
            dist.all_reduce(counts)
        return float(counts[0] / counts[1]) if counts[1] else None

    def fit(self, checkpoint: str, max_steps: int | None = None) -> dict:
        cfg = self.cfg
        accumulate = cfg.train.accumulate_grad_batches
        max_steps = max_steps or cfg.trainer.max_steps
        # items: [key, segment_id, padded] as delivered; data_wait: per epoch, the share of the
        # training loop's time spent waiting for the loader (near 0: the model is fed)
        history = {"losses": [], "val_acc": [], "epoch_loss": [], "batches": 0, "items": [], "data_wait": [], "items_per_s": []}
        self.model.train()
        while self.epoch < cfg.trainer.max_epochs:
            per_epoch = self._start_epoch()  # this epoch's items on every rank (equal by construction)
            check_every = max(1, int(per_epoch / cfg.data.batch_size * cfg.trainer.val_check_interval))
            first_step = len(history["losses"])
            fed = Fed()
            for i, batch in enumerate(fed.timed(self.loader)):
                last_of_step = (i + 1) % accumulate == 0
                sync = contextlib.nullcontext() if last_of_step or self.world == 1 else self.model.no_sync()
                with sync:
                    loss = self._loss(batch) / accumulate
                    self.scaler.scale(loss).backward()
                history["batches"] += 1
                history["items"] += [[m["key"], m.get("segment_id"), m["padded"]] for m in batch["meta"]]
                if last_of_step:
                    self.scaler.step(self.optimizer)
                    self.scaler.update()
                    self.optimizer.zero_grad(set_to_none=True)
                    self.step += 1
                    history["losses"].append(float(loss.detach()) * accumulate)
                    if max_steps and self.step >= max_steps:
                        fed.close(history)
                        self.save(checkpoint)
                        return history
                if (i + 1) % check_every == 0 and cfg.trainer.val_check_interval < 1.0:
                    with fed.left_out_of_it():
                        history["val_acc"].append(self.validate())
            fed.close(history)
            self.epoch += 1
            done = history["losses"][first_step:]
            history["epoch_loss"].append(sum(done) / len(done) if done else None)
            history["val_acc"].append(self.validate())
            self.save(checkpoint)
            if self.rank == 0:
                log.info("epoch %d done: step %d, mean loss %s, val accuracy %s; %.1f items/s, waiting for data %.0f%% of "
                         "the time", self.epoch, self.step, history["epoch_loss"][-1], history["val_acc"][-1],
                         history["items_per_s"][-1], 100 * history["data_wait"][-1])
        return history


class Fed:
    """Whether the model is fed: time the loop spends in the loader's next() against all of
    it (the step's forward, backward and optimizer included), and items per second."""

    def __init__(self):
        self.wait = 0.0
        self.items = 0
        self.left_out = 0.0  # time of what is neither step nor loader (mid-epoch validation)
        self.start = time.perf_counter()

    def timed(self, loader):
        began = time.perf_counter()
        batches = iter(loader)  # starting the workers is waiting for data too
        self.wait += time.perf_counter() - began
        while True:
            began = time.perf_counter()
            batch = next(batches, None)
            self.wait += time.perf_counter() - began
            if batch is None:
                return
            self.items += len(batch["meta"])
            yield batch

    @contextlib.contextmanager
    def left_out_of_it(self):
        """Time that is neither the loop's step nor its loader (validation mid-epoch)."""
        began = time.perf_counter()
        try:
            yield
        finally:
            self.left_out += time.perf_counter() - began

    def close(self, history: dict) -> None:
        total = time.perf_counter() - self.start - self.left_out
        history["data_wait"].append(self.wait / total if total else 0.0)
        history["items_per_s"].append(self.items / total if total else 0.0)


def run_train(config_path: str | None, resume: str | None = None, max_steps: int | None = None, checkpoint: str | None = None) -> dict:
    cfg = load_config(config_path)
    if not cfg.data.shards:
        raise ConfigError(f"{config_path or 'config'}: data.shards is not set: name a folder or URL of shards written by "
                          "`vidshard write` (`vidshard demo` writes a synthetic set to demo-out/shards)")
    rank = int(os.environ.get("RANK", 0))
    trainer = Trainer(cfg, cfg.data.shards, resume=resume)
    history = trainer.fit(checkpoint or os.path.join(cfg.work_dir, "checkpoint.pt"), max_steps=max_steps)
    if rank == 0:
        log.info("trained %d steps; last loss %s", trainer.step, history["losses"][-1] if history["losses"] else None)
    if dist.is_initialized():
        dist.destroy_process_group()
    return history
