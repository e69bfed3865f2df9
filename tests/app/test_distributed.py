"""torchrun with 2 ranks (gloo, CPU) x 2 DataLoader workers, a 64-rank x 8-worker plan
resumed three times, simulated without files, and the training example's checkpoint/resume."""

from __future__ import annotations

import collections
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import yaml

from streaming.plan import Catalog, PlanSpec, Progress, epoch_plan
from vidshard.synth import synth_source

from ..helpers import write

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def torchrun(module_args: list[str], nproc: int = 2, env: dict | None = None) -> None:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", *module_args]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=240)
    assert out.returncode == 0, out.stderr[-4000:]


@pytest.mark.parametrize("sample", ["chunk", "segment"])
def test_torchrun_ranks_are_disjoint_complete_and_equal(small_dataset, tmp_path, sample):
    args = {"source": small_dataset, "workers": 2, "batch": 2, "sample": sample, "dist": True,
            "out": str(tmp_path / "rank{rank}.json"), "epoch": 2}
    torchrun(["-m", "tests.loader_child", json.dumps(args)])
    ranks = [json.load(open(tmp_path / f"rank{r}.json")) for r in range(2)]
    assert ranks[0]["batches"] == ranks[1]["batches"]  # no rank waits on another
    real = [collections.Counter((k, s) for k, s, padded in r["items"] if not padded) for r in ranks]
    assert not set(real[0]) & set(real[1])  # disjoint
    index = json.load(open(os.path.join(small_dataset, "index.json")))
    expected = index["totals"]["chunks"] if sample == "chunk" else index["totals"]["chunk_segments"]
    assert sum((real[0] + real[1]).values()) == expected == len(real[0] + real[1])  # together: the epoch


def test_plan_for_64_ranks_8_workers_10000_uneven_shards_resumed_three_times():
    """Fresh, then interrupted and resumed three times on other shapes: every item once over
    the whole chain, every rank equal at every level. (`vidshard bench` times the planning.)"""
    rng = np.random.default_rng(0)
    counts = rng.integers(20, 200, size=10_000)
    catalog = Catalog(sample_items=[rng.integers(0, 6, size=c) for c in counts],  # segment mode: uneven items
                      sample_bytes=[rng.integers(500_000, 4_000_000, size=c) for c in counts])
    seen = np.zeros(catalog.total_items, dtype=np.int64)
    spec = PlanSpec(epoch=0, seed=0, shuffle=True, drop_last=False, buffer_bytes=256 * 10**6, world_size=64, num_workers=8,
                    block_bytes=4 * 10**6)
    for level, shape in enumerate([(48, 4), (64, 8), (80, 6), None]):
        plan = epoch_plan(catalog, spec)
        per_rank, yielded = collections.Counter(), {}
        for rank in range(spec.world_size):
            for worker in range(spec.num_workers):
                windows = plan.windows(rank, worker)
                n = sum(len(w.positions) for w in windows)
                per_rank[rank] += n
                yielded[rank, worker] = n if shape is None else int(rng.integers(0, n + 1) * 0.3)
                left = yielded[rank, worker]
                for w in windows:  # the items delivered before the interruption
                    take = min(left, len(w.positions))
                    np.add.at(seen, w.positions[:take][~w.padded[:take]], 1)
                    left -= take
        assert set(per_rank.values()) == {plan.items_per_rank}  # equal per rank, at every level
        if shape is not None:
            spec = PlanSpec(epoch=0, seed=0, shuffle=True, drop_last=False, buffer_bytes=256 * 10**6, world_size=shape[0],
                            num_workers=shape[1], block_bytes=4 * 10**6, base=Progress(spec=spec, yielded=yielded))
    assert (seen == 1).all()  # exact coverage over the chain


@pytest.mark.filterwarnings("ignore:'set_vital' is deprecated")
def test_training_checkpoint_resume_continue(tmp_path):
    """`vidshard train --max-steps 2`, then `--resume` to step 4: the resumed loader yields
    exactly the batches an uninterrupted run's loader yields after its first 2 steps, and the
    restored weights keep training. In this process (the runs are what the CLI runs), which
    spares two interpreters importing torch."""
    import torch

    from vidshard.cli import main
    from vidshard.train.config import load_config
    from vidshard.train.trainer import Trainer, run_train

    work, shards = tmp_path / "work", tmp_path / "shards"
    synth_source(str(tmp_path / "src"), videos=4, frames=120, size=(96, 96))
    write(str(tmp_path / "src"), str(shards), max_video_frames=40, shard_bytes=10**6)
    config = tmp_path / "tiny.yaml"
    raw = yaml.safe_load(open(os.path.join(ROOT, "configs", "train_tiny.yaml")))
    raw["work_dir"], raw["data"]["shards"] = str(work), str(shards)
    # fp32: bf16 autocast on a CPU without bf16 units is 5x slower, and precision plays no part here.
    raw["trainer"]["precision"] = 32
    config.write_text(yaml.safe_dump(raw))
    cfg = load_config(str(config))
    per_step = cfg.data.batch_size * cfg.train.accumulate_grad_batches
    # What an uninterrupted run's loader yields over 4 steps (the model plays no part in it).
    reference = Trainer(cfg, str(shards))
    reference.train_ds.set_epoch(0)
    batches = iter(reference.loader)
    expected = [[m["key"], m.get("segment_id"), m["padded"]] for _ in range(4 * cfg.train.accumulate_grad_batches)
                for m in next(batches)["meta"]]
    del batches, reference

    ckpt = str(tmp_path / "ckpt.pt")
    assert main(["-q", "train", "--config", str(config), "--checkpoint", ckpt, "--max-steps", "2"]) == 0
    saved = torch.load(ckpt, weights_only=True)
    assert saved["step"] == 2 and saved["world"] == [1, 2] and len(saved["loader_states"]) == 1
    history = run_train(str(config), resume=ckpt, max_steps=4, checkpoint=ckpt)
    resumed = torch.load(ckpt, weights_only=True)
    assert resumed["step"] == 4
    assert history["items"] == expected[2 * per_step:]  # the same items, in the same order
    moved = [k for k in saved["model"] if not torch.equal(saved["model"][k], resumed["model"][k])]
    assert moved  # the resumed run kept training the restored weights
