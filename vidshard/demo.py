"""`vidshard demo`: synthetic multi-view source -> shards -> one streamed epoch -> a short
training run of the chunked-loading example (loss and validation accuracy per epoch).

Everything lives under the config's work_dir; a second run reuses the source and shards.
"""

from __future__ import annotations

import logging
import os
import time
from fractions import Fraction

from torch.utils.data import DataLoader

from streaming.collation import collate
from streaming.dataset import VideoShardDataset
from vidshard.bench.memory import children_peak_rss_mb, peak_rss_mb
from vidshard.train.config import Config, load_config

log = logging.getLogger("vidshard.demo")


def prepare_shards(cfg: Config) -> str:
    """Synthesize the source (once) and write its shards (resumes / no-op when complete)."""
    from shardwriter.job import WriteConfig, write_dataset
    from vidshard.synth import synth_source

    src, out = os.path.join(cfg.work_dir, "source"), os.path.join(cfg.work_dir, "shards")
    if not os.path.isdir(os.path.join(src, "videos")):
        s = cfg.source
        log.info("synthesizing %d videos x %d views x %d frames at %dx%d", s.videos, len(s.views), s.frames, *s.size)
        synth_source(src, videos=s.videos, frames=s.frames, views=s.views, size=s.size, fps=Fraction(s.fps))
    write_dataset(
        src, out,
        WriteConfig(max_video_frames=cfg.data.max_video_frames, overlap=cfg.data.overlap, shard_bytes=16 * 10**6),
        workers=min(2, os.cpu_count() or 1),
    )
    return out


def make_dataset(cfg: Config, shards: str, **overrides) -> VideoShardDataset:
    d = cfg.data
    kwargs = dict(sample=d.sample, num_frames=d.num_frames, img_size=d.img_size, views=d.views, load_rgb=d.load_rgb,
                  load_kpt=d.load_kpt, shuffle_buffer=d.shuffle_buffer, seed=d.seed)
    return VideoShardDataset(shards, **{**kwargs, **overrides})


def run_demo(config_path: str | None) -> dict:
    cfg = load_config(config_path)
    baseline = peak_rss_mb()
    shards = prepare_shards(cfg)
    # The streamed epoch shows chunk mode as the original used it: every frame of each chunk.
    ds = make_dataset(cfg, shards, num_frames=None if cfg.data.sample == "chunk" else cfg.data.num_frames, img_size=None)
    loader = DataLoader(ds, batch_size=cfg.data.batch_size, num_workers=cfg.data.num_workers, collate_fn=collate,
                        persistent_workers=cfg.data.num_workers > 0)
    start = time.perf_counter()
    first = None
    items = frames = 0
    for batch in loader:
        first = first or time.perf_counter() - start
        items += len(batch["meta"])
        frames += int(batch["frame_mask"].sum()) * len(ds.options.views)
    elapsed = time.perf_counter() - start
    workers = children_peak_rss_mb()
    del loader  # ends the persistent workers
    m = ds.manifest
    result = {
        "videos": m.totals["videos"], "chunks": m.totals["chunks"], "items": items, "items_per_s": items / elapsed,
        "frames_per_s": frames / elapsed, "first_batch_s": first, "worker_peak_rss_mb": sorted(workers.values()),
    }
    print(f"dataset: {m.totals['videos']} videos -> {m.totals['chunks']} chunks (max {m.max_video_frames} frames/chunk), "
          f"{m.totals['shards']} shard(s) in {shards}")
    print(f"one epoch: {items} items, {result['items_per_s']:.1f} items/s, {result['frames_per_s']:.0f} frames/s "
          f"(all views), first batch after {first:.2f} s")
    print("peak RSS per DataLoader worker: " + ", ".join(f"{r:.0f} MB" for r in result["worker_peak_rss_mb"])
          + f" (torch and PyAV alone: {baseline:.0f} MB in the main process, shared after fork)")
    if cfg.trainer.max_epochs:
        from vidshard.train.trainer import Trainer

        start = time.perf_counter()
        logging.getLogger("vidshard.train").setLevel(logging.WARNING)  # the table below says it once
        trainer = Trainer(cfg, shards)
        history = trainer.fit(os.path.join(cfg.work_dir, "checkpoint.pt"), max_steps=cfg.trainer.max_steps)
        result.update(losses=history["losses"], epoch_loss=history["epoch_loss"], val_acc=history["val_acc"])
        chance = 1 / len(m.labels)
        print(f"training the example ({cfg.model.backbone} backbone, {cfg.model.view_fusion} fusion) to classify timeline "
              f"segments ({cfg.data.num_frames} frames each) into {len(m.labels)} labels; "
              f"{len(trainer.val_ids)} of {m.totals['videos']} videos held out for validation:")
        for epoch, (loss, acc) in enumerate(zip(history["epoch_loss"], history["val_acc"])):
            print(f"  epoch {epoch + 1}: mean loss {loss:.3f}, validation accuracy {acc:.0%} (chance {chance:.0%})")
        print(f"{trainer.step} optimizer steps in {time.perf_counter() - start:.0f} s; checkpoint in {cfg.work_dir}/checkpoint.pt")
    return result
