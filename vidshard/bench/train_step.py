"""`vidshard bench --train`: the training example's model step next to the loader, same data,
same run. Three numbers say whether the model is fed: the loader alone (items/s through the
example's 2-worker DataLoader, nothing else running), the model step alone (forward, backward
and optimizer on one batch held in memory, as items/s), and the two together in the
example's own loop (`Trainer.fit`: items/s and the share of the time spent waiting for data).
Waiting near 0 and "together" near "step alone": the step is the bottleneck, the GPU fed.
"""

from __future__ import annotations

import os
import tempfile
import time
from fractions import Fraction

# (videos, frames, source size, img_size, num_frames, backbone) per level; CPU-sized: `tiny` is
# the example's 70k-weight 3D CNN (r3d_18 takes seconds per step on a CPU).
LEVELS = {"full": (4, 600, 160, 112, 16, "tiny"), "quick": (3, 300, 128, 64, 8, "tiny"), "smoke": (2, 60, 48, 32, 4, "tiny")}
BATCH = 4


def report(level: str) -> dict:
    from torch.utils.data import DataLoader

    from shardwriter.job import WriteConfig, write_dataset
    from streaming import collate
    from vidshard.synth import synth_source
    from vidshard.train.config import load_config
    from vidshard.train.trainer import Trainer

    videos, frames, size, img, num_frames, backbone = LEVELS[level]
    with tempfile.TemporaryDirectory(prefix="vidshard-bench-train-") as tmp:
        src, out = os.path.join(tmp, "src"), os.path.join(tmp, "out")
        synth_source(src, videos=videos, frames=frames, size=(size, size), fps=Fraction(30))
        write_dataset(src, out, WriteConfig(max_video_frames=200), workers=min(2, os.cpu_count() or 1))
        cfg = load_config(None, {"work_dir": tmp, "model.backbone": backbone, "data.shards": out, "data.batch_size": BATCH,
                                 "data.num_workers": 2, "data.img_size": [img, img], "data.num_frames": num_frames,
                                 "trainer.precision": 32, "trainer.max_epochs": 1})
        trainer = Trainer(cfg, out)
        loader_alone = _items_per_s(DataLoader(trainer.train_ds, batch_size=BATCH, num_workers=2, collate_fn=collate))
        batch = next(iter(DataLoader(trainer.train_ds, batch_size=BATCH, collate_fn=collate)))
        steps, start = 0, time.perf_counter()
        while steps < 3 or time.perf_counter() - start < 2.0:
            loss = trainer._loss(batch)
            loss.backward()
            trainer.optimizer.step()
            trainer.optimizer.zero_grad(set_to_none=True)
            steps += 1
        step_alone = steps * BATCH / (time.perf_counter() - start)
        history = trainer.fit(os.path.join(tmp, "ckpt.pt"))
    return {"level": level, "backbone": backbone, "img_size": img, "num_frames": num_frames, "batch_size": BATCH,
            "loader_items_per_s": round(loader_alone, 2), "step_items_per_s": round(step_alone, 2),
            "together_items_per_s": round(history["items_per_s"][0], 2), "data_wait": round(history["data_wait"][0], 3)}


def _items_per_s(loader) -> float:
    items, start = 0, time.perf_counter()
    for batch in loader:
        items += len(batch["meta"])
    return items / (time.perf_counter() - start)


def markdown(r: dict) -> list[str]:
    return ["", f"The training example's step beside its loader (backbone {r['backbone']}, {r['img_size']}x{r['img_size']}, "
            f"{r['num_frames']} frames x 3 views, batch {r['batch_size']}, 2 workers; same data, same run):", "",
            "| loader alone (items/s) | model step alone (items/s) | together (items/s) | waiting for data |", "|---|---|---|---|",
            f"| {r['loader_items_per_s']} | {r['step_items_per_s']} | {r['together_items_per_s']} | {r['data_wait']:.1%} |"]
