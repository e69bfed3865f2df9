"""One set of defaults: the CLI, the training example's config and its YAML files read the
libraries' defaults (streaming.options.StreamOptions, shardwriter.config.WriteConfig) rather
than repeat them, so a default changed there is the one every entry point uses."""

from __future__ import annotations

import dataclasses
import glob
import os

import yaml

from shardwriter.config import WriteConfig
from shardwriter.encode import EncodeSettings
from streaming.options import MapOptions, ReadOptions, StreamOptions
from vidshard.cli import build_parser
from vidshard.train.config import Config, DataConfig

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_the_training_data_section_starts_from_the_reader_defaults():
    data, read = DataConfig(), StreamOptions()
    for field in ("sample", "num_frames", "img_size", "views", "load_rgb", "load_kpt", "shuffle_buffer", "seed"):
        assert getattr(data, field) == getattr(read, field), field
    assert data.overlap == WriteConfig.overlap


def test_both_datasets_share_the_read_defaults():
    shared = {f.name for f in dataclasses.fields(ReadOptions)}
    for cls in (StreamOptions, MapOptions):
        assert {f.name: getattr(cls(), f.name) for f in dataclasses.fields(cls) if f.name in shared} == \
            {name: getattr(ReadOptions(), name) for name in shared}


def test_the_cli_defaults_are_the_writer_defaults():
    parser = build_parser()
    write = parser.parse_args(["write", "src", "out", "--max-video-frames", "30"])
    check = parser.parse_args(["check", "src"])
    for args in (write, check):
        assert args.overlap == WriteConfig.overlap
    assert (write.shard_size, write.seed, write.on_error, write.mix_videos) == (
        WriteConfig.shard_bytes, WriteConfig.seed, WriteConfig.on_error, WriteConfig.mix_videos)
    assert (write.gop, write.crf, write.preset) == (EncodeSettings.gop, EncodeSettings.crf, EncodeSettings.preset)


def _defaults(cls) -> dict:
    return {f.name: getattr(cls(), f.name) for f in dataclasses.fields(cls)}


def test_the_yaml_configs_state_only_what_differs_from_the_defaults():
    """A key that restates its default would keep an old value after the default changes."""
    config = Config()
    sections = {f.name: _defaults(type(getattr(config, f.name))) for f in dataclasses.fields(Config)
                if dataclasses.is_dataclass(getattr(config, f.name))}
    for path in glob.glob(os.path.join(ROOT, "configs", "*.yaml")):
        raw = yaml.safe_load(open(path)) or {}
        for section, values in raw.items():
            if not isinstance(values, dict):
                assert values != getattr(config, section), f"{os.path.basename(path)}: {section} restates its default"
                continue
            for key, value in values.items():
                default = sections[section][key]
                same = list(default) == value if isinstance(default, tuple) and isinstance(value, list) else default == value
                assert not same, f"{os.path.basename(path)}: {section}.{key} restates its default {default!r}"
