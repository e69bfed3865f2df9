"""Issue 22's acceptance property: anything `vidshard write` accepts, VideoShardDataset and
VideoShardMapDataset read without error under their default limits. Hypothesis draws tiny
sources (the synthetic source, then an annotation, a timeline and keypoint arrays of its
choosing: odd names, dtypes numpy has and index.json may not describe, shapes) and the
writer's settings; the writer either refuses with a WriterError or writes a dataset that
both readers read whole, keypoints included."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from fractions import Fraction

import numpy as np
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from shardwriter.errors import WriterError
from streaming import VideoShardDataset, VideoShardMapDataset
from vidshard.synth import synth_source

from ..helpers import write

DTYPES = ["<f4", "<i8", "|b1", "<c8", "<U3", "|S2", "<M8[s]", "<f2", [("x", "<f4"), ("y", "<f4")], ("<f4", (2,))]
json_values = st.recursive(st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.text(max_size=8),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
                           max_leaves=6)


@st.composite
def sources(draw):
    frames = draw(st.integers(1, 10))
    max_frames = draw(st.none() | st.integers(1, 6))
    overlap = draw(st.integers(0, max_frames - 1)) if max_frames else 0
    cuts = sorted(draw(st.lists(st.integers(0, frames), max_size=4, unique=True)))
    timeline = [{"start": a, "end": b, "label": draw(st.text(min_size=1, max_size=4))}
                for a, b in zip(cuts[::2], cuts[1::2]) if b > a]
    arrays = draw(st.dictionaries(st.text(min_size=1, max_size=6), st.tuples(st.sampled_from(range(len(DTYPES))),
                                                                           st.lists(st.integers(0, 3), max_size=2)),
                                  max_size=2))
    return dict(frames=frames, max_frames=max_frames, overlap=overlap, timeline=timeline, arrays=arrays,
                extra=draw(st.dictionaries(st.text(min_size=1, max_size=5).filter(lambda k: k != "timeline"), json_values,
                                           max_size=3)),
                views=draw(st.sampled_from([("front",), ("front", "left")])),
                fps=draw(st.sampled_from([Fraction(30), Fraction(30000, 1001), Fraction(25)])))


def make_source(root: str, s: dict) -> None:
    synth_source(root, videos=1, frames=s["frames"], views=s["views"], size=(32, 24), fps=s["fps"], seed=1,
                 keypoints=False)
    (vid,) = os.listdir(os.path.join(root, "videos"))
    with open(os.path.join(root, "annotations", f"{vid}.json"), "w") as f:
        json.dump({"timeline": s["timeline"], **s["extra"]}, f)
    if s["arrays"]:
        folder = os.path.join(root, "keypoints", vid, s["views"][0])
        os.makedirs(folder)
        for frame in range(0, s["frames"], 2):
            arrays = {name: np.zeros(tuple(shape), np.dtype(DTYPES[d] if isinstance(DTYPES[d], str) else DTYPES[d]))
                      for name, (d, shape) in s["arrays"].items()}
            try:
                np.savez(os.path.join(folder, f"{frame:06d}_pose.npz"), **arrays)
            except (OSError, ValueError):  # a name np.savez cannot store (e.g. a path): no such source file
                shutil.rmtree(folder)
                return


@settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))
@given(sources())
def test_whatever_write_accepts_both_readers_read(s):
    with tempfile.TemporaryDirectory(prefix="vidshard-accept-") as tmp:
        src, out = os.path.join(tmp, "src"), os.path.join(tmp, "out")
        make_source(src, s)
        try:
            write(src, out, max_video_frames=s["max_frames"], overlap=s["overlap"])
        except WriterError:
            event("refused")
            return  # refused, naming the file (the other tests check the messages)
        event("accepted")
        kpt = bool(s["arrays"]) and os.path.isdir(os.path.join(src, "keypoints"))
        items = list(VideoShardDataset(out, load_kpt=kpt))
        assert sum(int(i["video"].shape[1]) for i in items) >= s["frames"]
        mapped = VideoShardMapDataset(out, load_kpt=kpt)
        assert len(mapped) == len(items)
        for i in range(len(mapped)):
            mapped[i]
        if s["timeline"]:
            list(VideoShardDataset(out, sample="segment", num_frames=1, load_kpt=kpt))
