"""The training example's `data.sampler: balanced`: labels drawn equally often, draws fixed
by (seed, epoch, rank), and a mid-epoch checkpoint resumed to exactly the items an
uninterrupted run draws."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from vidshard.synth import synth_source
from vidshard.train.config import ConfigError, load_config
from vidshard.train.data import EpochWeightedSampler, inverse_frequency

from ..helpers import write

pytestmark = pytest.mark.filterwarnings("ignore:'set_vital' is deprecated")


def test_inverse_frequency_gives_every_label_the_same_weight():
    labels = np.array([0, 0, 0, 0, 2, 1, 1, -1, 0, 2])
    weights = inverse_frequency(labels)
    assert {label: round(float(weights[labels == label].sum()), 9) for label in (-1, 0, 1, 2)} == {-1: 1, 0: 1, 1: 1, 2: 1}


def test_draws_depend_on_seed_epoch_and_rank_only():
    weights = inverse_frequency(np.array([0] * 30 + [1] * 3))
    sampler = EpochWeightedSampler(weights, 40, seed=3, rank=0)
    first = list(sampler)
    assert list(sampler) == first == list(EpochWeightedSampler(weights, 40, seed=3, rank=0))  # replayable (resume)
    sampler.set_epoch(1)
    assert list(sampler) != first
    assert list(EpochWeightedSampler(weights, 40, seed=3, rank=1)) != first  # ranks draw their own


@pytest.fixture(scope="module")
def balanced_config(tmp_path_factory):
    root = tmp_path_factory.mktemp("balanced")
    src, shards = str(root / "src"), str(root / "shards")
    ids = synth_source(src, videos=3, frames=48, views=("front", "left"), size=(32, 32), seed=4, keypoints=False)
    rare = [{"start": 0, "end": 20, "label": "walk"}, {"start": 20, "end": 22, "label": "fall"},
            {"start": 22, "end": 48, "label": "walk"}]
    for video_id in ids:
        with open(os.path.join(src, "annotations", f"{video_id}.json"), "w") as f:
            json.dump({"timeline": rare}, f)
    write(src, shards, max_video_frames=8, shard_bytes=40_000)
    config = root / "balanced.yaml"
    config.write_text(f"""
work_dir: {root / "work"}
model: {{backbone: tiny, view_fusion: late}}
data: {{shards: {shards}, batch_size: 2, num_workers: 2, img_size: [16, 16], num_frames: 4, sampler: balanced}}
train: {{accumulate_grad_batches: 1}}
trainer: {{precision: 32, max_epochs: 1, max_steps: 6}}
""")
    return str(config), shards


def test_balanced_training_draws_labels_equally_and_resumes_mid_epoch(balanced_config, tmp_path):
    from vidshard.cli import main
    from vidshard.train.trainer import Trainer, run_train

    config, shards = balanced_config
    cfg = load_config(config)
    reference = Trainer(cfg, shards)
    labels = reference.train_ds.label_ids
    assert np.bincount(labels).min() * 5 < len(labels)  # "fall" is rare among the items ...
    per_epoch = reference._start_epoch()
    assert per_epoch == len(reference.train_ds)
    drawn = [reference.train_ds[i]["label"] for i in reference.sampler]
    assert 0.25 < drawn.count("fall") / len(drawn) < 0.75  # ... and drawn about as often as "walk"
    batches = iter(reference.loader)
    expected = [[m["key"], m["segment_id"], m["padded"]] for _ in range(6) for m in next(batches)["meta"]]
    del batches, reference

    ckpt = str(tmp_path / "ckpt.pt")
    assert main(["-q", "train", "--config", config, "--checkpoint", ckpt, "--max-steps", "2"]) == 0
    history = run_train(config, resume=ckpt, max_steps=6, checkpoint=ckpt)
    assert history["items"] == expected[2 * cfg.data.batch_size:]  # the same draws, in the same order


def test_unknown_sampler_is_refused_by_name(balanced_config):
    from vidshard.train.trainer import Trainer

    config, shards = balanced_config
    with pytest.raises(ConfigError, match="data.sampler: 'weighted' is not one of"):
        Trainer(load_config(config, {"data.sampler": "weighted"}), shards)


def test_balanced_resume_on_another_shape_restarts_the_epoch(balanced_config, tmp_path):
    """Saved with 2 workers, resumed with 1: the interrupted epoch starts again from its first
    draw (docs/training.md), with the model, optimizer, epoch and step restored."""
    from vidshard.cli import main
    from vidshard.train.trainer import Trainer, run_train

    config, shards = balanced_config
    cfg = load_config(config)
    reference = Trainer(cfg, shards)
    reference._start_epoch()
    batches = iter(reference.loader)
    expected = [[m["key"], m["segment_id"], m["padded"]] for _ in range(4) for m in next(batches)["meta"]]
    del batches, reference

    ckpt = str(tmp_path / "ckpt.pt")
    assert main(["-q", "train", "--config", config, "--checkpoint", ckpt, "--max-steps", "2"]) == 0
    one_worker = tmp_path / "one.yaml"
    one_worker.write_text(open(config).read().replace("num_workers: 2", "num_workers: 1"))
    history = run_train(str(one_worker), resume=ckpt, max_steps=6, checkpoint=ckpt)
    assert history["items"] == expected  # steps 3-6 draw the epoch's first 4 batches again
