"""Typed YAML configs: the shipped ones load; unknown keys and wrong types name file, section and key."""

from __future__ import annotations

import os

import pytest

from vidshard.train.config import ConfigError, load_config

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.parametrize("name", ["demo.yaml", "config_chunked_loading.yaml", "train_tiny.yaml"])
def test_shipped_configs_load(name):
    cfg = load_config(os.path.join(ROOT, "configs", name))
    assert cfg.data.max_video_frames and cfg.model.backbone in ("r3d_18", "tiny")


def test_original_keys_and_types():
    cfg = load_config(os.path.join(ROOT, "configs", "config_chunked_loading.yaml"))
    assert cfg.data.img_size == (224, 224) and cfg.data.max_video_frames == 1000 and cfg.train.accumulate_grad_batches == 4
    assert cfg.trainer.precision == 16 and cfg.model.view_fusion == "late"


@pytest.mark.parametrize(
    "text, message",
    [
        ("data:\n  max_video_frame: 10\n", r"data: unknown key\(s\) \['max_video_frame'\]"),
        ("data:\n  batch_size: two\n", r"data.batch_size: expected int, got 'two'"),
        ("data:\n  load_rgb: 1\n", r"data.load_rgb: expected bool, got 1"),
        ("data:\n  img_size: [224]\n", r"data.img_size: .*"),
        ("trainer:\n  max_epochs: true\n", r"trainer.max_epochs: expected int, got True"),
        ("modle:\n  backbone: r3d_18\n", r"unknown key\(s\) \['modle'\]"),
    ],
)
def test_bad_configs_name_the_key(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message) as info:
        load_config(str(path))
    assert str(path) in str(info.value)


def test_overrides_reach_top_level_and_section_keys(tmp_path):
    cfg = load_config(None, {"work_dir": str(tmp_path), "data.batch_size": 3, "train.video_batch_size": 2})
    assert (cfg.work_dir, cfg.data.batch_size, cfg.train.video_batch_size) == (str(tmp_path), 3, 2)
