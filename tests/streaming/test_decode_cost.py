"""What decoding costs: `decode.frames_decoded(wanted, gop)` (the decoder's seek rule, pure)
against the frames ClipDecoder really decodes, and the datasets' counts of frames decoded and
delivered, in ds.stats and in a StatefulDataLoader's worker states (`resume.frame_counts`)."""

from __future__ import annotations

import json
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streaming import VideoShardDataset
from streaming.decode import Claims, ClipDecoder, frames_decoded
from streaming.resume import frame_counts

from ..helpers import read_dataset


@pytest.mark.parametrize("wanted, gop, decoded", [
    ([0], 8, 1), ([5], 8, 6), ([5, 6], 8, 7), ([5, 20], 8, 6 + 5), ([7, 8], 8, 9), ([8, 9], 8, 2),
    (list(range(30)), 8, 30), ([29], 1, 1), ([0, 29], 1, 2), ([3, 9, 15], 4, 4 + 2 + 4), ([], 8, 0),
])
def test_frames_decoded_by_hand(wanted, gop, decoded):
    assert frames_decoded(wanted, gop) == decoded


@pytest.fixture(scope="module")
def clip(small_dataset):
    _, samples = read_dataset(small_dataset)
    key = sorted(samples)[0]
    meta = json.loads(samples[key]["meta.json"])
    claims = Claims(frames=meta["end_frame"] - meta["start_frame"], height=48, width=64,
                    fps=Fraction(meta["fps_rational"]), gop=meta["gop"])
    return samples[key]["front.mp4"], claims


@settings(max_examples=40)
@given(st.data())
def test_the_decoder_decodes_what_the_rule_says(clip, data):
    """Known GOP, known wanted frames: the decoder's own count is the rule's, exactly."""
    clip_bytes, claims = clip
    wanted = sorted(data.draw(st.sets(st.integers(0, claims.frames - 1), min_size=1, max_size=claims.frames)))
    decoder = ClipDecoder()
    decoder.decode(clip_bytes, np.array(wanted), claims, None, np.empty((len(wanted), 3, 48, 64), np.uint8))
    assert decoder.stats == {"frames_decoded": frames_decoded(wanted, claims.gop), "frames_delivered": len(wanted)}


def _expected(path: str, mode: str, num_frames: int | None) -> tuple[int, int]:
    """(decoded, delivered) over one epoch, from every item's wanted frames and the rule."""
    decoded = delivered = 0
    ds = VideoShardDataset(path, sample=mode, num_frames=num_frames, load_rgb=False, load_kpt=True, shuffle=False)
    views = len(ds.options.views)
    for item in ds:
        wanted = sorted(set((item["frame_index"] - item["meta"]["start_frame"]).tolist()))
        decoded += frames_decoded(wanted, 8) * views
        delivered += len(wanted) * views
    return decoded, delivered


@pytest.mark.parametrize("mode, num_frames", [("chunk", None), ("segment", 3), ("clip", 4)])
def test_a_dataset_counts_frames_decoded_and_delivered(small_dataset, mode, num_frames):
    decoded, delivered = _expected(small_dataset, mode, num_frames)
    ds = VideoShardDataset(small_dataset, sample=mode, num_frames=num_frames, shuffle=False, img_size=(24, 32))
    for _ in ds:
        pass
    assert (ds.stats["frames_decoded"], ds.stats["frames_delivered"]) == (decoded, delivered)
    assert ds.state_dict()["frames"] == {"decoded": decoded, "delivered": delivered}
    if mode == "chunk":
        assert decoded == delivered  # every frame of the chunk: nothing decoded in vain
    else:
        assert decoded > delivered


def test_worker_counts_reach_the_loader_state(small_dataset):
    """Each DataLoader worker counts its own; the main process reads them from the loader state."""
    from torchdata.stateful_dataloader import StatefulDataLoader

    from streaming import collate

    decoded, delivered = _expected(small_dataset, "segment", 3)
    ds = VideoShardDataset(small_dataset, sample="segment", num_frames=3, shuffle=False)
    loader = StatefulDataLoader(ds, batch_size=2, num_workers=2, collate_fn=collate)
    for _ in loader:
        pass
    assert ds.stats["frames_decoded"] == 0  # the main process decoded nothing
    assert frame_counts(loader.state_dict()) == {"decoded": decoded, "delivered": delivered}
