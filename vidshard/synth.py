"""A synthetic source dataset whose pixels say which frame and view they are.

Every frame is a 4x4 grid of flat cells, each one of four luma levels (a base-4 digit):
10 digits of frame index, 2 of view index, 4 of checksum. Flat cells survive H.264 at
any sane quality and downscaling to a few pixels per cell, so tests and tools can prove
from decoded pixels alone which source frame they hold (`read_barcode`).

The chroma carries the frame's timeline label: every frame inside a segment is tinted with
its label's colour (grey in the gaps), so the labels are visible in `vidshard show` and
learnable by the training example's demo. The barcode lives in luma alone, which a tint
does not change.
"""

from __future__ import annotations

import dataclasses
import json
import os
from fractions import Fraction

import av
import numpy as np

from vidshard.errors import SettingError

GRID = 4
LEVELS = np.array([32, 96, 160, 224], dtype=np.uint8)  # digit d -> grey level; 64 apart
FRAME_DIGITS, VIEW_DIGITS, CHECK_DIGITS = 10, 2, 4
MAX_FRAMES = 4**FRAME_DIGITS
LABELS = ("adjust", "front", "grasp", "idle", "reach", "release")
KPT_KIND = "sam3d_body"
NUM_JOINTS = 17
# Chroma offset of a label's tint from grey (U, V = 128 +- TINT). Where RGB clips (the
# brightest and darkest cells), luma moves by < 8: far inside the barcode's +-32 margin.
TINT = 20
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # BT.601 luma weights of R, G, B


def _digits(value: int, n: int) -> list[int]:
    return [(value >> (2 * i)) & 3 for i in range(n)]


def _checksum(digits: list[int]) -> int:
    # Weighted sum times 7 (odd) mod 256: any single wrong digit changes it.
    return (7 * sum((i + 1) * d for i, d in enumerate(digits)) + 3) % 256


def barcode_digits(frame: int, view: int) -> list[int]:
    if not 0 <= frame < MAX_FRAMES or not 0 <= view < 4**VIEW_DIGITS:
        raise ValueError(f"cannot barcode frame {frame}, view {view}")
    payload = _digits(frame, FRAME_DIGITS) + _digits(view, VIEW_DIGITS)
    return payload + _digits(_checksum(payload), CHECK_DIGITS)


def _cell_edges(n: int) -> np.ndarray:
    return np.linspace(0, n, GRID + 1).round().astype(int)


def barcode_image(frame: int, view: int, width: int, height: int) -> np.ndarray:
    """The grey (H, W) uint8 image of a frame."""
    img = np.empty((height, width), dtype=np.uint8)
    ys, xs = _cell_edges(height), _cell_edges(width)
    for cell, digit in enumerate(barcode_digits(frame, view)):
        r, c = divmod(cell, GRID)
        img[ys[r] : ys[r + 1], xs[c] : xs[c + 1]] = LEVELS[digit]
    return img


def label_tint(label_index: int | None) -> tuple[int, int]:
    """(U, V) of a frame: a label's colour on a circle around grey; grey (128, 128) for None."""
    if label_index is None:
        return 128, 128
    angle = 2 * np.pi * label_index / len(LABELS)
    return 128 + round(TINT * np.cos(angle)), 128 + round(TINT * np.sin(angle))


def read_barcode(image: np.ndarray) -> tuple[int, int]:
    """(frame, view) from an (H, W), (H, W, C) or (C, H, W) image; ValueError if unreadable."""
    img = np.asarray(image, dtype=np.float32)
    if img.ndim == 3:
        channel_axis = 0 if img.shape[0] in (1, 3) and img.shape[2] not in (1, 3) else 2
        img = np.moveaxis(img, channel_axis, -1)
        # Luma, not the channel mean: the label tint moves R, G and B but not their luma.
        img = img @ LUMA if img.shape[-1] == 3 else img[..., 0]
    ys, xs = _cell_edges(img.shape[0]), _cell_edges(img.shape[1])
    digits = []
    for cell in range(GRID * GRID):
        r, c = divmod(cell, GRID)
        y0, y1, x0, x1 = ys[r], ys[r + 1], xs[c], xs[c + 1]
        # The middle half of the cell: edges blur under compression and resizing.
        qy, qx = (y1 - y0) // 4, (x1 - x0) // 4
        level = img[y0 + qy : y1 - qy, x0 + qx : x1 - qx].mean()
        digits.append(int(np.clip(np.rint((level - LEVELS[0]) / 64.0), 0, 3)))
    payload, check = digits[: FRAME_DIGITS + VIEW_DIGITS], digits[FRAME_DIGITS + VIEW_DIGITS :]
    if _digits(_checksum(payload), CHECK_DIGITS) != check:
        raise ValueError(f"barcode checksum mismatch (digits {digits})")
    frame = sum(d << (2 * i) for i, d in enumerate(payload[:FRAME_DIGITS]))
    view = sum(d << (2 * i) for i, d in enumerate(payload[FRAME_DIGITS:]))
    return frame, view


def synth_timeline(num_frames: int, rng: np.random.Generator) -> list[dict]:
    """Sorted, disjoint segments of 1/30..1/5 of the video, with occasional unlabelled gaps."""
    lo = max(2, num_frames // 30)
    hi = max(lo + 1, num_frames // 5)
    segments, pos = [], 0
    while pos < num_frames:
        if rng.random() < 0.15:
            pos += int(rng.integers(1, lo + 1))  # a gap: frames no segment covers
            continue
        end = min(num_frames, pos + int(rng.integers(lo, hi + 1)))
        segments.append({"start": pos, "end": end, "label": str(rng.choice(LABELS))})
        pos = end
    return segments


def synth_keypoints(frame: int, view: int, width: int, height: int) -> np.ndarray:
    """A stick figure's 17 joints in pixels, walking across the view over time."""
    t = frame / 30.0
    cx = width * (0.5 + 0.3 * np.sin(t + view))
    cy = height * 0.5
    angles = np.linspace(0, 2 * np.pi, NUM_JOINTS, endpoint=False)
    radius = min(width, height) * 0.25
    return np.stack([cx + radius * 0.5 * np.cos(angles), cy + radius * np.sin(angles)], axis=1).astype(np.float32)


def keypoint_missing(frame: int, view: int) -> bool:
    """About one frame in ten has no keypoint file (exercises the mask)."""
    return (frame * 7 + view) % 10 == 3


def frame_label_indices(timeline: list[dict], num_frames: int) -> list[int | None]:
    """Per frame, the index in LABELS of the segment covering it (None in a gap)."""
    labels: list[int | None] = [None] * num_frames
    for seg in timeline:
        for f in range(seg["start"], min(seg["end"], num_frames)):
            labels[f] = LABELS.index(seg["label"]) if seg["label"] in LABELS else None
    return labels


@dataclasses.dataclass(frozen=True, kw_only=True)
class ViewQuirks:
    """The ways a real recording's file differs from a plain one, for the synthetic source.
    Every quirk leaves the frames as displayed (FFmpeg CLI's decode) carrying their barcodes."""

    rotate: int = 0  # display matrix: counter-clockwise degrees (0, 90, 180, 270), as phones write it
    hflip: bool = False  # display matrix: mirrored after the rotation
    full_range: bool = False  # yuvj420p, color_range=pc, BT.709 tags
    lead_in: int = 0  # frames encoded before frame 0 and cut by an MP4 edit list (decoders discard them)
    vfr: bool = False  # variable frame rate: every third frame comes 40% of a frame late
    codec: str = "libx264"  # "libvpx-vp9" writes WebM

    def __post_init__(self):
        if self.lead_in and "vp" in self.codec:
            raise ValueError("lead_in needs an MP4 edit list: WebM has none (its leading frames would be shown)")


def _stored(image: np.ndarray, rotate: int, hflip: bool) -> np.ndarray:
    """The stored picture that displays as `image` under the display matrix (rotate, hflip):
    the inverse of the filters the FFmpeg CLI's autorotate applies."""
    from shardwriter.display import orientation_filters

    matrix = _display_matrix(rotate, hflip)
    undo = {
        "cclock_flip": lambda a: a.T, "clock_flip": lambda a: a[::-1, ::-1].T,
        "clock": lambda a: np.rot90(a, 1), "cclock": lambda a: np.rot90(a, -1),
        "hflip": lambda a: a[:, ::-1], "vflip": lambda a: a[::-1],
    }
    for name, args in reversed(orientation_filters(matrix)):
        image = undo[args or name](image)
    return np.ascontiguousarray(image)


def _display_matrix(rotate: int, hflip: bool) -> tuple[int, ...]:
    """av_display_rotation_set(-rotate) then av_display_matrix_flip(hflip): what PyAV's
    set_display_rotation(rotate, hflip) writes."""
    import math

    radians = math.radians(rotate)
    c, s_ = math.cos(radians), math.sin(radians)
    m = [round(c * 65536), round(-s_ * 65536), 0, round(s_ * 65536), round(c * 65536), 0, 0, 0, 1 << 30]
    if hflip:
        m = [v * f for v, f in zip(m, (-1, 1, 1) * 3)]
    return tuple(m)


def write_video(
    path: str, view: int, num_frames: int, size: tuple[int, int], fps: Fraction, codec: str = "libx264",
    options: dict | None = None, quirks: ViewQuirks = ViewQuirks(), labels: list[int | None] | None = None,
) -> None:
    """One view file, encoded with the codec's defaults (B-frames, long GOP for libx264).
    `size` is the displayed size; a rotated view stores it sideways. Frame f is tinted with
    the colour of labels[f] (grey without labels)."""
    width, height = size
    codec = quirks.codec if quirks.codec != "libx264" else codec
    pix_fmt = "yuvj420p" if quirks.full_range else "yuv420p"
    time_base = Fraction(1, 1000) if quirks.vfr else 1 / fps
    with av.open(path, "w") as out:
        stream = out.add_stream(codec, rate=fps, options=options or {})
        stored = _stored(np.zeros((height, width), np.uint8), quirks.rotate, quirks.hflip)
        stream.height, stream.width = stored.shape
        stream.pix_fmt = pix_fmt
        if quirks.vfr:
            stream.codec_context.time_base = time_base
        if quirks.full_range:
            cc = stream.codec_context
            cc.color_range, cc.colorspace, cc.color_primaries, cc.color_trc = 2, 1, 1, 1
        if quirks.rotate or quirks.hflip:
            stream.set_display_rotation(quirks.rotate, hflip=quirks.hflip)
        rows, cols = stored.shape
        for f in range(-quirks.lead_in, num_frames):
            # Lead-in frames (f < 0) carry the barcode of frame MAX_FRAMES // 2 - f: never a real one.
            picture = barcode_image(f if f >= 0 else MAX_FRAMES // 2 - f, view, width, height)
            u, v = label_tint(labels[f] if labels and f >= 0 else None)
            # yuv420p as one (H * 3/2, W) array: the luma plane, then the U and V planes flattened.
            chroma = np.concatenate([np.full(rows * cols // 4, u, np.uint8), np.full(rows * cols // 4, v, np.uint8)])
            planes = np.concatenate([_stored(picture, quirks.rotate, quirks.hflip), chroma.reshape(rows // 2, cols)])
            frame = av.VideoFrame.from_ndarray(planes, format=pix_fmt)
            if quirks.vfr:
                frame.pts = round(1000 * f / fps) + (round(400 / fps) if f % 3 == 2 else 0)
            else:
                frame.pts = f
            frame.time_base = time_base
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))


def synth_source(
    out: str,
    *,
    videos: int = 4,
    frames: int = 300,
    views: tuple[str, ...] = ("front", "left", "right"),
    size: tuple[int, int] = (64, 64),
    fps: Fraction = Fraction(30),
    seed: int = 0,
    keypoints: bool = True,
    codec: str = "libx264",
    quirks: dict[str, ViewQuirks] | None = None,
) -> list[str]:
    """Write a source dataset in the layout of docs/source-layout.md; returns the video ids.
    `quirks` gives views the oddities of real recordings (ViewQuirks); frames and keypoints
    are those of the view as displayed."""
    unknown = set(quirks or {}) - set(views)
    if unknown:
        raise SettingError(f"quirks for views {sorted(unknown)}, which are not among {list(views)}")
    ids = [f"session_{i:03d}" for i in range(videos)]
    for i, vid in enumerate(ids):
        rng = np.random.default_rng([seed, i])
        timeline = synth_timeline(frames, rng)
        labels = frame_label_indices(timeline, frames)
        os.makedirs(os.path.join(out, "videos", vid), exist_ok=True)
        for v, view in enumerate(views):
            quirk = (quirks or {}).get(view, ViewQuirks())
            ext = "webm" if "vp9" in quirk.codec or "vp8" in quirk.codec else "mp4"
            write_video(os.path.join(out, "videos", vid, f"{view}.{ext}"), v, frames, size, fps, codec, quirks=quirk,
                        labels=labels)
            if keypoints:
                kdir = os.path.join(out, "keypoints", vid, view)
                os.makedirs(kdir, exist_ok=True)
                for f in range(frames):
                    if not keypoint_missing(f, v):
                        joints = synth_keypoints(f, v, *size)
                        np.savez(os.path.join(kdir, f"{f:06d}_{KPT_KIND}.npz"), joints_2d=joints, frame=np.int64(f))
        os.makedirs(os.path.join(out, "annotations"), exist_ok=True)
        annotation = {"timeline": timeline, "subject": f"s{i % 3:02d}", "synthetic": True}
        with open(os.path.join(out, "annotations", f"{vid}.json"), "w", encoding="utf-8") as f:
            json.dump(annotation, f, indent=1)
    return ids
