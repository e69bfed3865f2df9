"""`vidshard show`: a contact sheet of one sample as a PNG.

One row per view, a few frames spread over the chunk, each tile stamped (below it) with its
global frame index; 2D keypoints drawn on the frames; the chunk's timeline drawn under the
rows as coloured segments with their labels, segments cut by the chunk's edges marked with
an arrow at the cut.
"""

from __future__ import annotations

import dataclasses
import math
from collections import Counter

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from streaming.decode import ClipDecoder
from streaming.errors import SampleError
from streaming.format import META, SampleEntry, Segment
from streaming.items import ItemSpec, build_item, parse_sample
from streaming.options import ReadOptions, Source, open_source, sample_reader
from streaming.remote import redact
from streaming.sampling import uniform
from streaming.tario import Limits

from vidshard.errors import NoSuchSample

from .reading import sample_fields

PAD, LEFT, STAMP_H, BAR_H, BAR_LABEL_H, MIN_TILE_H = 6, 64, 14, 16, 14, 96
PALETTE = [(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
           (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128), (170, 110, 40)]


@dataclasses.dataclass(frozen=True, kw_only=True)
class Layout:
    size: tuple[int, int]  # (width, height) of the PNG
    scale: int  # integer upscaling of each frame (nearest neighbour)
    tiles: tuple[tuple[int, int], ...]  # per view: (width, height) of one scaled frame
    column: int  # width of a column: the widest tile
    bar_y: int  # top of the timeline bar

    def box(self, view: int, column: int) -> tuple[int, int, int, int]:
        x = LEFT + column * (self.column + PAD)
        y = PAD + sum(h + STAMP_H + PAD for _, h in self.tiles[:view])
        return x, y, x + self.tiles[view][0], y + self.tiles[view][1]


def layout(columns: int, sizes: list[tuple[int, int]]) -> Layout:
    """Rows of views at their own (width, height): a portrait view among landscape ones (a
    phone turned upright) keeps its shape, one integer scale for all."""
    scale = max(1, math.ceil(MIN_TILE_H / min(h for _, h in sizes)))
    tiles = tuple((w * scale, h * scale) for w, h in sizes)
    column = max(w for w, _ in tiles)
    rows_h = PAD + sum(h + STAMP_H + PAD for _, h in tiles)
    size = (LEFT + columns * (column + PAD), rows_h + BAR_H + BAR_LABEL_H + PAD)
    return Layout(size=size, scale=scale, tiles=tiles, column=column, bar_y=rows_h)


def contact_sheet(sample: dict, shard: str, src: Source, entry: SampleEntry, columns: int = 6) -> Image.Image:
    """The sheet of one sample, read as the reader reads it with `src.options`: its JSON
    members checked against index.json (`parse_sample`), each view decoded by the reader's
    item builder, which refuses sizes past the limits and clips that disagree with meta.json
    before it decodes, and keypoints read by its guarded npz reader. Every view is decoded
    before the sheet, sized from meta.json, is allocated."""
    opts = src.options
    sample_fields(sample, shard)  # the fields only tools read; parse_sample keeps just those items use
    info = parse_sample(sample, entry.nframes, entry.nsegments, opts, np.random.default_rng(0), shard, entry.segments)
    length = info.nframes
    spec = ItemSpec(frames=np.unique(uniform(0, length, min(columns, length))), segment=None)
    decoder = ClipDecoder()
    items = []
    for view in opts.views:  # one view per item: views may differ in size (a phone held upright)
        try:
            items.append(build_item(sample, info, spec, dataclasses.replace(opts, views=(view,)), decoder, shard))
        except SampleError as exc:  # the size checks name the view; the sizes they refuse are meta.json's
            raise exc.at(member=f"{entry.key}.{META}") from None
    sizes = [(info.meta["view_sizes"][view]["width"], info.meta["view_sizes"][view]["height"]) for view in opts.views]
    frames = spec.frames
    lay = layout(len(frames), sizes)
    sheet = Image.new("RGB", lay.size, (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default()
    for v, (view, item) in enumerate(zip(opts.views, items)):
        draw.text((PAD, lay.box(v, 0)[1] + lay.tiles[v][1] // 2 - 6), view, fill=(0, 0, 0), font=font)
        pixels = item["video"][0].numpy()  # [T, 3, H, W]
        points = _points(item) if opts.load_kpt else None
        for c, frame in enumerate(item["frame_index"].tolist()):
            x0, y0, x1, y1 = lay.box(v, c)
            tile = Image.fromarray(pixels[c].transpose(1, 2, 0)).resize(lay.tiles[v], Image.NEAREST)
            sheet.paste(tile, (x0, y0))
            if points is not None:
                for px, py in points[c]:
                    cx, cy = x0 + px * lay.scale, y0 + py * lay.scale
                    draw.ellipse((cx - 2, cy - 2, cx + 2, cy + 2), fill=(255, 40, 40))
            draw.text((x0, y1 + 1), f"f={frame}", fill=(0, 0, 0), font=font)
    _timeline(draw, font, lay, info.timeline, length, src.manifest.labels, frames)
    return sheet


def _points(item: dict) -> list[np.ndarray]:
    """Per shown frame, the (x, y) points of every 2D keypoint array of the item's one view
    present on that frame."""
    arrays = [a[0].numpy() for a in item["keypoints"].values()]
    mask = item["keypoints_mask"][0].numpy()
    points = [a for a in arrays if a.ndim >= 2 and a.shape[-1] == 2 and a.dtype.kind == "f"]  # (frames, ..., 2)
    return [np.concatenate([a[i].reshape(-1, 2) for a in points]) if points and mask[i] else np.zeros((0, 2))
            for i in range(len(mask))]


def _timeline(draw, font, lay: Layout, segments: list[Segment], length: int, labels: list[str], frames: np.ndarray) -> None:
    x0, x1 = LEFT, lay.size[0] - PAD
    y0, y1 = lay.bar_y, lay.bar_y + BAR_H
    span = x1 - x0

    def at(frame: float) -> int:
        return x0 + round(frame / length * span)

    draw.rectangle((x0, y0, x1, y1), outline=(120, 120, 120), fill=(235, 235, 235))
    for seg in segments:
        color = PALETTE[labels.index(seg.label) % len(PALETTE)] if seg.label in labels else (128, 128, 128)
        a, b = at(seg.start), at(seg.end)
        draw.rectangle((a, y0, b, y1), fill=color, outline=(40, 40, 40))
        mid = (y0 + y1) // 2
        if seg.truncated_start:
            draw.polygon([(a, mid), (a + 6, y0 + 2), (a + 6, y1 - 2)], fill=(0, 0, 0))
        if seg.truncated_end:
            draw.polygon([(b, mid), (b - 6, y0 + 2), (b - 6, y1 - 2)], fill=(0, 0, 0))
        draw.text((a + 2, y1 + 1), seg.label, fill=(0, 0, 0), font=font)
    for frame in frames.tolist():  # where the shown frames sit on the timeline
        draw.line((at(frame + 0.5), y0 - 3, at(frame + 0.5), y0), fill=(0, 0, 0))
    draw.text((PAD, y0 + 2), "timeline", fill=(0, 0, 0), font=font)


def open_dataset(source: str, keypoints: bool = True, limits: Limits = Limits()) -> Source:
    """The dataset as the reader opens it (index.json and its counts checked, the reader's
    item options) for every view at its stored size, keypoints where the dataset has them."""
    src = open_source(source, ReadOptions(limits=limits))
    load_kpt = keypoints and bool(src.manifest.keypoints)  # open_source refuses load_kpt for a dataset without
    return dataclasses.replace(src, options=dataclasses.replace(src.options, load_kpt=load_kpt))


def load_sample(src: Source, key: str | None) -> tuple[dict, str, SampleEntry]:
    """(sample, shard url, index.json entry) for `key`, or a random sample when key is None,
    read by the reader's sample reader: its members and byte limits (a kpt.npz no larger than
    index.json's schema allows for the sample's frames)."""
    pairs = [(i, j) for i, shard in enumerate(src.manifest.shards) for j in range(len(shard.samples))]
    if key is None:
        pair = pairs[int(np.random.default_rng().integers(len(pairs)))]
    else:
        pair = next(((i, j) for i, j in pairs if src.manifest.shards[i].samples[j].key == key), None)
        if pair is None:
            raise NoSuchSample(f"no sample {key!r} in the dataset's index.json")
    sample = sample_reader(src, Counter()).read([pair])[pair]
    if isinstance(sample, SampleError):
        raise sample
    return sample, redact(src.urls[pair[0]]), src.manifest.shards[pair[0]].samples[pair[1]]


def show(source: str, key: str | None, out: str, columns: int = 6, keypoints: bool = True, limits: Limits = Limits()) -> str:
    src = open_dataset(source, keypoints, limits)
    sample, url, entry = load_sample(src, key)
    contact_sheet(sample, url, src, entry, columns=columns).save(out)
    return sample["__key__"]
