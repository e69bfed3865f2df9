"""The training example's model: a torchvision video backbone shared by every view.

- late fusion: each view goes through the backbone on its own; the views' logits are averaged;
- early fusion: the views are tiled side by side into one wider clip before the backbone;
- with keypoints: a small per-frame MLP over all views' keypoints, averaged over the valid
  frames, adds its logits.
Inputs stay uint8 until they reach the model, so the float conversion and normalisation run
on the training device.
"""

from __future__ import annotations

import torch
import torchvision
from torch import nn

from .config import ConfigError

# Kinetics-400 statistics, which torchvision's video models are trained with.
MEAN = torch.tensor([0.43216, 0.394666, 0.37645]).view(1, 3, 1, 1, 1)
STD = torch.tensor([0.22803, 0.22145, 0.216989]).view(1, 3, 1, 1, 1)


class TinyVideoNet(nn.Module):
    """Three strided 3D convolutions (about 70k weights): `model.backbone: tiny`, for the demo
    and CPU tests, where a torchvision video ResNet (33M weights) takes minutes per step.
    Strides rather than pooling: CPU 3D convolutions are slow, so each layer shrinks its input."""

    def __init__(self, num_classes: int):
        super().__init__()

        def block(cin: int, cout: int, kernel: tuple[int, int, int], stride: tuple[int, int, int]) -> list[nn.Module]:
            padding = tuple(k // 2 for k in kernel)
            return [nn.Conv3d(cin, cout, kernel, stride, padding, bias=False), nn.BatchNorm3d(cout), nn.ReLU(inplace=True)]

        self.features = nn.Sequential(*block(3, 16, (1, 3, 3), (1, 2, 2)), *block(16, 32, (3, 3, 3), (1, 2, 2)),
                                      *block(32, 64, (3, 3, 3), (2, 2, 2)), nn.AdaptiveAvgPool3d(1), nn.Flatten())
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, C, T, H, W]
        return self.fc(self.features(x))


def video_backbone(name: str, num_classes: int) -> nn.Module:
    if name == "tiny":
        return TinyVideoNet(num_classes)
    names = torchvision.models.list_models(module=torchvision.models.video)
    if name not in names:
        raise ConfigError(f"model.backbone {name!r} is neither 'tiny' nor a torchvision video model; choose one of {names}")
    return torchvision.models.get_model(name, weights=None, num_classes=num_classes)


class VideoClassifier(nn.Module):
    def __init__(self, *, backbone: str, num_classes: int, view_fusion: str = "late", keypoint_dim: int = 0, hidden: int = 128):
        super().__init__()
        if view_fusion not in ("late", "early"):
            raise ConfigError(f"model.view_fusion must be 'late' or 'early', got {view_fusion!r}")
        self.view_fusion = view_fusion
        self.backbone = video_backbone(backbone, num_classes)
        self.keypoints = (
            nn.Sequential(nn.LayerNorm(keypoint_dim), nn.Linear(keypoint_dim, hidden), nn.ReLU(), nn.Linear(hidden, num_classes))
            if keypoint_dim
            else None  # LayerNorm first: keypoints arrive in pixels, far from unit scale
        )
        self.register_buffer("mean", MEAN, persistent=False)
        self.register_buffer("std", STD, persistent=False)

    def forward(self, video: torch.Tensor, keypoints: torch.Tensor | None = None, keypoints_mask: torch.Tensor | None = None):
        """video uint8 [B, V, T, C, H, W]; keypoints float [B, V, T, D]; mask bool [B, V, T]."""
        b, v, t, c, h, w = video.shape
        clips = video.permute(0, 1, 3, 2, 4, 5).float().div_(255)  # [B, V, C, T, H, W]
        if self.view_fusion == "late":
            x = (clips.reshape(b * v, c, t, h, w) - self.mean) / self.std
            logits = self.backbone(x).view(b, v, -1).mean(dim=1)
        else:
            tiled = clips.permute(0, 2, 3, 4, 1, 5).reshape(b, c, t, h, v * w)  # views side by side
            logits = self.backbone((tiled - self.mean) / self.std)
        if self.keypoints is not None and keypoints is not None:
            per_frame = keypoints.permute(0, 2, 1, 3).reshape(b, t, -1)  # all views' keypoints of a frame
            valid = keypoints_mask.all(dim=1).float() if keypoints_mask is not None else torch.ones(b, t, device=video.device)
            pooled = (self.keypoints(per_frame) * valid[..., None]).sum(1) / valid.sum(1, keepdim=True).clamp(min=1)
            logits = logits + pooled
        return logits


def keypoint_features(batch: dict) -> torch.Tensor:
    """The batch's floating-point keypoint arrays flattened per frame: float [B, V, T, D]."""
    parts = [t.flatten(3).float() if t.dim() > 3 else t[..., None].float()
             for _, t in sorted(batch["keypoints"].items()) if t.is_floating_point()]
    return torch.cat(parts, dim=-1)


def keypoint_dim(schema: dict, num_views: int) -> int:
    """D of keypoint_features for a manifest's keypoint schema (float arrays only)."""
    per_view = 0
    for info in schema.values():
        if info["dtype"][1] == "f":
            per_view += int(torch.tensor(info["shape"]).prod()) if info["shape"] else 1
    return per_view * num_views


def predict(model: nn.Module, video: torch.Tensor, micro: int | None = None, **inputs: torch.Tensor) -> torch.Tensor:
    """model(video, **inputs), run on micro-batches of at most `micro` clips and concatenated
    (train.video_batch_size): the same outputs as one batch in eval mode, a fraction of the
    activations' memory."""
    if micro is None or len(video) <= micro:
        return model(video, **inputs)
    if micro < 1:
        raise ConfigError(f"train.video_batch_size must be >= 1, got {micro}")
    return torch.cat([model(video[i : i + micro], **{k: v[i : i + micro] for k, v in inputs.items()})
                      for i in range(0, len(video), micro)])
