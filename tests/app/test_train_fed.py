"""The training example says whether its model is fed (the share of the loop's time spent
waiting for the loader, per epoch, logged beside items/s), and `train.video_batch_size`
runs validation and inference on micro-batches with the outputs of one batch."""

from __future__ import annotations

import logging
import time

import pytest
import torch

from vidshard.synth import synth_source
from vidshard.train.model import VideoClassifier, predict
from vidshard.train.trainer import Fed, Trainer, load_config

from ..helpers import write

pytestmark = pytest.mark.filterwarnings("ignore:'set_vital' is deprecated")


@pytest.mark.parametrize("backbone, fusion, kpt", [("tiny", "late", 0), ("tiny", "early", 6), ("r3d_18", "late", 0)])
def test_micro_batches_give_the_outputs_of_one_batch(backbone, fusion, kpt):
    torch.manual_seed(0)
    model = VideoClassifier(backbone=backbone, num_classes=5, view_fusion=fusion, keypoint_dim=kpt).eval()
    video = torch.randint(0, 256, (7, 2, 4, 3, 16, 16), dtype=torch.uint8)  # [B, V, T, C, H, W]
    # keypoint_dim = D per view x 2 views
    inputs = {"keypoints": torch.randn(7, 2, 4, kpt // 2), "keypoints_mask": torch.rand(7, 2, 4) > 0.3} if kpt else {}
    with torch.no_grad():
        whole = model(video, **inputs)
        for micro in (1, 3, 7, 100):
            parts = predict(model, video, micro, **inputs)
            assert parts.shape == whole.shape
            torch.testing.assert_close(parts, whole, rtol=1e-4, atol=1e-5)
            assert torch.equal(parts.argmax(-1), whole.argmax(-1))
    with pytest.raises(ValueError, match="video_batch_size must be >= 1"):
        predict(model, video, 0)


def test_starting_the_loader_is_waiting_and_validation_is_left_out():
    """A loader whose iter() takes 0.3 s (workers starting), then 3 instant batches; 0.1 s of
    validation in between is neither step nor wait."""
    class Slow:
        def __iter__(self):
            time.sleep(0.3)
            return iter([{"meta": [{}]}] * 3)

    fed, history = Fed(), {"data_wait": [], "items_per_s": []}
    for i, _ in enumerate(fed.timed(Slow())):
        time.sleep(0.01)
        if i == 1:
            with fed.left_out_of_it():
                time.sleep(0.1)
    fed.close(history)
    assert history["data_wait"][0] > 0.8, history


def test_the_loader_wait_is_the_time_spent_in_next():
    """A loader that takes 30 ms per batch, a step that takes 10 ms: 75% waiting."""
    def slow_loader():
        for _ in range(5):
            time.sleep(0.03)
            yield {"meta": [{}, {}]}

    fed, history = Fed(), {"data_wait": [], "items_per_s": []}
    for _ in fed.timed(slow_loader()):
        time.sleep(0.01)
    fed.close(history)
    assert 0.6 < history["data_wait"][0] < 0.9 and fed.items == 10
    assert 10 / 0.3 < history["items_per_s"][0] < 10 / 0.2


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    root = tmp_path_factory.mktemp("fed")
    synth_source(str(root / "src"), videos=3, frames=32, views=("front", "left"), size=(32, 32), seed=9, keypoints=False)
    write(str(root / "src"), str(root / "shards"), max_video_frames=16, shard_bytes=40_000)
    path = root / "fed.yaml"
    path.write_text(f"""
work_dir: {root / "work"}
model: {{backbone: tiny, view_fusion: late}}
data: {{shards: {root / "shards"}, batch_size: 2, num_workers: 2, img_size: [16, 16], num_frames: 4, val_fraction: 0.34}}
train: {{video_batch_size: 1}}
trainer: {{precision: 32, max_epochs: 2}}
""")
    return str(path)


def test_each_epoch_logs_its_data_wait_and_validates_in_micro_batches(config, tmp_path, caplog, monkeypatch):
    cfg = load_config(config)
    trainer = Trainer(cfg, cfg.data.shards)
    sizes = []
    real = trainer.model.forward
    monkeypatch.setattr(trainer.model, "forward", lambda video, **kw: sizes.append(len(video)) or real(video, **kw))
    with caplog.at_level(logging.INFO, logger="vidshard"):
        history = trainer.fit(str(tmp_path / "ckpt.pt"))
    assert len(history["data_wait"]) == len(history["items_per_s"]) == 2
    assert all(0 < w < 1 for w in history["data_wait"]) and all(r > 0 for r in history["items_per_s"])
    logged = [r.getMessage() for r in caplog.records if "waiting for data" in r.getMessage()]
    assert len(logged) == 2 and "items/s" in logged[0], logged
    assert history["val_acc"][-1] is not None
    assert 1 in sizes and 2 in sizes  # training steps see batches of 2, validation micro-batches of 1
