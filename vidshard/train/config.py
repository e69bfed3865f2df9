"""YAML configs (the original's keys) loaded into typed, frozen dataclasses.

Unknown keys and wrong types are errors that name the file, the section and the key.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any

import yaml

from shardwriter.config import WriteConfig
from streaming.options import StreamOptions

from vidshard.errors import SettingError

_READ = StreamOptions()  # the reader's defaults: the data section's reader settings start from them


@dataclasses.dataclass(frozen=True, kw_only=True)
class SourceConfig:
    """The synthetic source the demo and the training example generate."""

    videos: int = 6
    frames: int = 600
    views: tuple[str, ...] = ("front", "left", "right")
    size: tuple[int, int] = (96, 96)  # width, height of the source videos
    fps: int = 30


@dataclasses.dataclass(frozen=True, kw_only=True)
class DataConfig:
    shards: str | None = None  # the training example's shards: a folder or URL (s3://...) holding index.json
    batch_size: int = 1
    num_workers: int = 2
    img_size: tuple[int, int] | None = _READ.img_size  # (H, W) delivered; None = as stored
    num_frames: int | None = _READ.num_frames  # frames per item in segment/clip mode
    load_rgb: bool = _READ.load_rgb
    load_kpt: bool = _READ.load_kpt
    max_video_frames: int | None = 1000  # chunk length when writing shards (the example's; the writer has no default)
    overlap: int = WriteConfig.overlap
    sample: str = _READ.sample
    views: tuple[str, ...] | None = _READ.views
    shuffle_buffer: str = _READ.shuffle_buffer
    seed: int = _READ.seed
    val_fraction: float = 0.0  # share of VIDEOS held out for validation
    sampler: str = "stream"  # stream: VideoShardDataset's shuffle | balanced: labels drawn equally often (map-style)


@dataclasses.dataclass(frozen=True, kw_only=True)
class ModelConfig:
    backbone: str = "r3d_18"  # any torchvision.models.video constructor
    view_fusion: str = "late"  # late | early
    weights: str | None = None  # local state_dict to start from; nothing is downloaded


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrainConfig:
    accumulate_grad_batches: int = 1
    lr: float = 1e-3
    # Validation and inference run the model on micro-batches of this many clips and join the
    # outputs (the original's third OOM fix): a batch that trains fits, one 4x larger may not. None: whole batches.
    video_batch_size: int | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrainerConfig:
    precision: int | str = 32
    max_epochs: int = 1
    max_steps: int | None = None
    val_check_interval: float = 1.0


@dataclasses.dataclass(frozen=True, kw_only=True)
class Config:
    experiment: str = "vidshard"
    work_dir: str = "demo-out"
    source: SourceConfig = SourceConfig()
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    trainer: TrainerConfig = TrainerConfig()


class ConfigError(SettingError):
    """A training config refused: the key and why."""


def _check(value: Any, hint: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(hint):
            try:
                return _check(value, option, where)
            except ConfigError:
                continue
        raise ConfigError(f"{where}: {value!r} is not {hint}")
    if hint is type(None):
        if value is not None:
            raise ConfigError(f"{where}: expected null, got {value!r}")
        return None
    if origin is tuple:
        args = typing.get_args(hint)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        if args and args[-1] is Ellipsis:
            return tuple(_check(v, args[0], where) for v in value)
        if len(value) != len(args):
            raise ConfigError(f"{where}: expected {len(args)} values, got {value!r}")
        return tuple(_check(v, a, where) for v, a in zip(value, args))
    if dataclasses.is_dataclass(hint):
        return _section(hint, value, where)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, hint) or (hint is int and isinstance(value, bool)):
        raise ConfigError(f"{where}: expected {hint.__name__}, got {value!r}")
    return value


def _section(cls: type, raw: Any, where: str) -> Any:
    if raw is None:
        return cls()
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    unknown = sorted(set(raw) - set(hints))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; known: {sorted(hints)}")
    return cls(**{k: _check(v, hints[k], f"{where}.{k}") for k, v in raw.items()})


def load_config(path: str | None, overrides: dict[str, Any] | None = None) -> Config:
    """Read a YAML config (None: the defaults); `overrides` = {"data.batch_size": 2, ...}."""
    raw: dict = {}
    if path is not None:
        try:
            with open(path, encoding="utf-8") as f:
                raw = yaml.safe_load(f) or {}
        except FileNotFoundError:
            raise ConfigError(f"{path}: no such config file") from None
    for dotted, value in (overrides or {}).items():
        section, _, key = dotted.partition(".")
        if key:
            raw.setdefault(section, {})[key] = value
        else:  # a top-level key (work_dir, experiment)
            raw[section] = value
    return _section(Config, raw, path or "config")
