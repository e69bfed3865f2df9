"""`vidshard demo` end to end on a smaller source: shards are written, an epoch streams, and
the training example learns the synthetic labels (the loss falls, validation beats chance)."""

from __future__ import annotations

import os

import yaml

from vidshard.demo import run_demo

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_demo_streams_and_learns(tmp_path, capsys):
    raw = yaml.safe_load(open(os.path.join(ROOT, "configs", "demo.yaml")))
    raw["work_dir"] = str(tmp_path / "demo")
    raw.setdefault("source", {})["frames"] = 300
    config = tmp_path / "demo.yaml"
    config.write_text(yaml.safe_dump(raw))
    result = run_demo(str(config))
    assert result["items"] == result["chunks"] == 12  # 6 videos x 300 frames / 200-frame chunks, every chunk once
    losses, accuracy = result["epoch_loss"], result["val_acc"]
    assert losses[-1] < 0.8 * losses[0]
    assert accuracy[-1] > 2 / len(["adjust", "front", "grasp", "idle", "reach", "release"])  # twice chance
    out = capsys.readouterr().out
    assert "validation accuracy" in out and "(chance 17%)" in out
