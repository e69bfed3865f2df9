"""The write job's settings as one value, checked when it is made: a bad setting is a
ValueError naming the flag and the value before OUTPUT is touched (the CLI prints it and
exits 2), so the corrected command just runs."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from streaming.format import check_views

from .encode import EncodeSettings


@dataclasses.dataclass(frozen=True, kw_only=True)
class WriteConfig:
    """What decides the output bytes (workers, the engine and the node count do not)."""

    max_video_frames: int | None
    overlap: int = 0
    views: tuple[str, ...] | None = None  # None: discovered from the files, sorted
    shard_bytes: int = 1 << 30
    encode: EncodeSettings = EncodeSettings()
    seed: int = 0
    on_error: str = "raise"  # "raise": the first bad video stops the job | "skip": reported, the rest written (the reader's words)
    truncate_views: bool = False
    mix_videos: int = 64  # a shard mixes the chunks of up to this many videos (plan.sample_order)

    def __post_init__(self):
        if self.max_video_frames is not None and self.max_video_frames < 1:
            raise ValueError(f"--max-video-frames must be >= 1, got {self.max_video_frames}")
        if self.overlap < 0:
            raise ValueError(f"--overlap must be >= 0, got {self.overlap}")
        if self.max_video_frames is None and self.overlap:
            raise ValueError(f"--overlap {self.overlap} needs --max-video-frames (chunks to overlap)")
        if self.max_video_frames is not None and self.overlap >= self.max_video_frames:
            raise ValueError(
                f"--overlap ({self.overlap}) must be smaller than --max-video-frames ({self.max_video_frames}): "
                "each chunk must start after the previous one"
            )
        if self.shard_bytes < 1:
            raise ValueError(f"--shard-size must be positive, got {self.shard_bytes}")
        if self.views is not None:
            check_views(tuple(self.views))
        if self.mix_videos < 1:
            raise ValueError(f"--mix-videos must be >= 1, got {self.mix_videos}")
        if self.on_error not in ("raise", "skip"):
            raise ValueError(f"--on-error must be 'raise' or 'skip', got {self.on_error!r}")
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")

    def to_json(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self)))

