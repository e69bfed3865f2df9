"""frame_labels against a per-frame reference: sorted, disjoint segments (what the writer
makes and the reader checks), any frames. A binary search per frame must give what painting
each segment's frames gives."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from streaming.sampling import frame_labels


@st.composite
def timelines(draw):
    length = draw(st.integers(1, 60))
    cuts = sorted(set(draw(st.lists(st.integers(0, length), max_size=12))))
    segments = []
    for start, end in zip(cuts, cuts[1:]):
        if draw(st.booleans()):  # some spans are unlabelled
            segments.append((start, end, draw(st.integers(0, 5))))
    frames = np.array(draw(st.lists(st.integers(0, length - 1), max_size=30)), dtype=np.int64)
    return length, segments, frames


@given(timelines())
@settings(max_examples=300, deadline=None)
def test_frame_labels_match_painting_each_segment(case):
    length, segments, frames = case
    painted = np.full(length, -1)
    for start, end, label in segments:
        painted[start:end] = label
    assert frame_labels(frames, segments).tolist() == painted[frames].tolist()
    assert frame_labels(frames, np.array(segments, dtype=np.int64).reshape(-1, 3)).tolist() == painted[frames].tolist()
