"""VideoShardDataset end to end: every delivered frame is proven from its pixels."""

from __future__ import annotations

import collections
import json
import os

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from vidshard.synth import keypoint_missing, read_barcode
from streaming import VideoShardDataset, collate
from streaming.errors import DecodeError, SampleError

from ..helpers import VIEWS


def check_pixels(item, views=VIEWS):
    video, frames = item["video"], item["frame_index"].tolist()
    assert video.dtype == torch.uint8 and video.shape[:2] == (len(views), len(frames))
    for v, view in enumerate(views):
        for t, f in enumerate(frames):
            assert read_barcode(video[v, t].numpy()) == (f, VIEWS.index(view)), (item["meta"]["key"], view, t)


def source_timeline(source, video_id):
    with open(os.path.join(source, "annotations", f"{video_id}.json")) as f:
        return json.load(f)["timeline"]


@pytest.mark.parametrize("img_size", [None, (24, 32)])
def test_chunk_mode_delivers_every_frame_of_every_chunk(small_dataset, img_size):
    ds = VideoShardDataset(small_dataset, img_size=img_size)
    items = list(ds)
    assert len(items) == len(ds) == 9
    for item in items:
        meta = item["meta"]
        assert item["frame_index"].tolist() == list(range(meta["start_frame"], meta["end_frame"]))
        if img_size:
            assert item["video"].shape[-2:] == img_size
        check_pixels(item)
    assert sorted(i["meta"]["key"] for i in items) == sorted({i["meta"]["key"] for i in items})


@pytest.mark.parametrize("img_size", [None, (16, 16)])
def test_segment_mode_items_lie_inside_one_segment(small_dataset, small_source, img_size):
    ds = VideoShardDataset(small_dataset, sample="segment", num_frames=6, img_size=img_size, views=("right", "front"))
    items = list(ds)
    index = json.load(open(os.path.join(small_dataset, "index.json")))
    assert len(items) == len(ds) == index["totals"]["chunk_segments"]
    labels = index["labels"]
    for item in items:
        meta = item["meta"]
        seg = source_timeline(small_source, meta["video_id"])[meta["segment_id"]]
        frames = item["frame_index"].tolist()
        assert len(frames) == 6 and all(max(seg["start"], meta["start_frame"]) <= f < min(seg["end"], meta["end_frame"]) for f in frames)
        assert item["label"] == seg["label"] and labels[item["label_id"]] == seg["label"]
        assert (item["frame_labels"] == item["label_id"]).all()
        assert meta["truncated_start"] == (seg["start"] < meta["start_frame"])
        check_pixels(item, views=("right", "front"))


def test_clip_mode_and_frame_labels(small_dataset, small_source):
    ds = VideoShardDataset(small_dataset, sample="clip", num_frames=5, stride=3, img_size=(20, 20))
    items = list(ds)
    assert len(items) == 9
    index = json.load(open(os.path.join(small_dataset, "index.json")))
    for item in items:
        frames = item["frame_index"].tolist()
        assert frames == list(range(frames[0], frames[0] + 13, 3))
        check_pixels(item)
        timeline = source_timeline(small_source, item["meta"]["video_id"])
        for f, label in zip(frames, item["frame_labels"].tolist()):
            want = [index["labels"].index(s["label"]) for s in timeline if s["start"] <= f < s["end"]]
            assert label == (want[0] if want else -1)


def test_keypoints_line_up_with_frames_and_mask(small_dataset):
    ds = VideoShardDataset(small_dataset, sample="clip", num_frames=9, load_kpt=True)
    for item in ds:
        frames = item["frame_index"].tolist()
        mask = item["keypoints_mask"]
        assert mask.shape == (3, 9) and item["keypoints"]["sam3d_body.joints_2d"].shape == (3, 9, 17, 2)
        for v in range(3):
            for t, f in enumerate(frames):
                assert bool(mask[v, t]) == (not keypoint_missing(f, v))
                assert int(item["keypoints"]["sam3d_body.frame"][v, t]) == (f if mask[v, t] else 0)


def corrupt_clips(out, only=None):
    """Overwrite clips' bytes in place (sizes and offsets unchanged): all, or one sample's."""
    import tarfile

    for name in os.listdir(out):
        if name.endswith(".tar"):
            path = os.path.join(out, name)
            with tarfile.open(path) as tar:
                spans = [(m.offset_data, m.size) for m in tar
                         if m.name.endswith(".mp4") and (only is None or m.name.startswith(only + "."))]
            with open(path, "r+b") as f:
                for offset, size in spans:
                    f.seek(offset)
                    f.write(b"\xff" * size)


def test_keypoints_only_never_touches_video(small_dataset, tmp_path):
    import shutil

    broken = str(tmp_path / "broken")
    shutil.copytree(small_dataset, broken)
    corrupt_clips(broken)
    kpt_only = list(VideoShardDataset(broken, load_rgb=False, load_kpt=True))
    assert len(kpt_only) == 9 and "video" not in kpt_only[0]
    with pytest.raises(DecodeError) as info:
        list(VideoShardDataset(broken))
    assert info.value.key and info.value.view in VIEWS and info.value.shard.endswith(".tar")
    ds = VideoShardDataset(broken, on_error="skip")
    with pytest.raises(SampleError, match="every item .* failed: nothing to pad with"):
        list(ds)
    assert ds.stats["skipped_decode"] == 9


def test_skipped_items_are_substituted_so_ranks_stay_equal(small_dataset, tmp_path):
    import shutil

    broken = str(tmp_path / "broken")
    shutil.copytree(small_dataset, broken)
    corrupt_clips(broken, only="session_001_00001")
    ds = VideoShardDataset(broken, on_error="skip", shuffle=False)
    items = list(ds)
    assert len(items) == len(ds) == 9  # the rank still yields its full share
    keys = [i["meta"]["key"] for i in items]
    assert "session_001_00001" not in keys and ds.stats["skipped_decode"] == 1 and ds.stats["substituted"] == 1
    assert sum(i["meta"]["padded"] for i in items) == 1  # the stand-in is marked as padding


def keys_of_epoch(ds, epoch, workers=2):
    ds.set_epoch(epoch)
    loader = DataLoader(ds, batch_size=2, num_workers=workers, collate_fn=collate, persistent_workers=False)
    return [k for batch in loader for k in (m["key"] for m in batch["meta"])]


def test_two_workers_every_chunk_once_and_epoch_order(small_dataset):
    ds = VideoShardDataset(small_dataset, img_size=(16, 16), shuffle_buffer="60KB")
    e0 = keys_of_epoch(ds, 0)
    assert sorted(e0) == sorted(set(e0)) and len(e0) == 9
    e1 = keys_of_epoch(ds, 1)
    assert sorted(e1) == sorted(e0) and e1 != e0
    assert keys_of_epoch(ds, 0) == e0


def test_persistent_workers_follow_set_epoch(small_dataset):
    ds = VideoShardDataset(small_dataset, load_rgb=False, load_kpt=True)
    loader = DataLoader(ds, batch_size=3, num_workers=2, collate_fn=collate, persistent_workers=True)
    epochs = []
    for epoch in range(3):
        ds.set_epoch(epoch)
        epochs.append([k for b in loader for k in (m["key"] for m in b["meta"])])
    assert all(sorted(e) == sorted(epochs[0]) for e in epochs) and len({tuple(e) for e in epochs}) == 3


def test_collate_pads_uneven_items(small_dataset):
    items = list(VideoShardDataset(small_dataset, sample="segment", shuffle=False, load_kpt=True))[:4]
    batch = collate(items)
    lengths = [len(i["frame_index"]) for i in items]
    assert batch["video"].shape[:3] == (4, 3, max(lengths)) and batch["frame_mask"].sum(1).tolist() == lengths
    assert (batch["frame_index"][~batch["frame_mask"]] == -1).all()
    assert batch["keypoints_mask"].shape == (4, 3, max(lengths)) and batch["label_id"].shape == (4,)


@pytest.mark.filterwarnings("ignore:This DataLoader will create")
def test_clear_errors_for_bad_arguments(small_dataset, tmp_path):
    with pytest.raises(ValueError, match="views"):
        VideoShardDataset(small_dataset, views=["top"])
    with pytest.raises(ValueError, match="sample must be one of"):
        VideoShardDataset(small_dataset, sample="frames")
    with pytest.raises(FileNotFoundError, match="index.json"):
        VideoShardDataset(str(tmp_path))
    ds = VideoShardDataset(small_dataset)
    loader = DataLoader(ds, num_workers=10, batch_size=None)
    with pytest.raises(Exception, match="fewer items than its 10 DataLoader workers"):
        list(loader)


def test_shard_url_list_selects_a_subset(small_dataset):
    index = json.load(open(os.path.join(small_dataset, "index.json")))
    first = index["shardlist"][0]
    ds = VideoShardDataset(os.path.join(small_dataset, first["url"]))
    assert len(ds) == first["nsamples"] == len(list(ds))
    pattern = os.path.join(small_dataset, "shard-{000000..%06d}.tar" % (len(index["shardlist"]) - 1))
    assert len(VideoShardDataset(pattern)) == 9


def test_decoder_channel_order(tmp_path):
    """Barcodes are grey; this pins R, G and B to the right channels."""
    from fractions import Fraction

    import av

    from shardwriter.encode import ClipEncoder, EncodeSettings
    from streaming.decode import Claims, ClipDecoder

    path = str(tmp_path / "c.mp4")
    enc = ClipEncoder(path, Fraction(30), (32, 32), EncodeSettings(gop=4))
    colours = [(220, 30, 30), (30, 220, 30), (30, 30, 220)]
    for rgb in colours:
        enc.write(av.VideoFrame.from_ndarray(np.full((32, 32, 3), rgb, np.uint8), format="rgb24").reformat(format="yuv420p"))
    enc.close()
    out = np.empty((3, 3, 16, 16), np.uint8)
    ClipDecoder().decode(open(path, "rb").read(), np.arange(3), Claims(frames=3, height=32, width=32, fps=Fraction(30), gop=4), (16, 16), out)
    for frame, rgb in zip(out, colours):
        assert np.abs(frame.reshape(3, -1).mean(1) - np.array(rgb)).max() < 12


def test_a_worker_error_reaches_the_main_process_typed(small_dataset, tmp_path):
    import shutil

    broken = str(tmp_path / "broken")
    shutil.copytree(small_dataset, broken)
    corrupt_clips(broken)
    loader = DataLoader(VideoShardDataset(broken, img_size=(16, 16)), batch_size=None, num_workers=1)
    with pytest.raises(DecodeError, match="clip does not decode .*key=session_"):
        list(loader)


def test_a_cache_smaller_than_the_dataset_is_not_used_when_blocks_split_shards(small_dataset, tmp_path, caplog):
    """Blocks smaller than a shard: every window reads a few blocks from many shards, and a
    whole-shard cache that cannot hold the dataset would download whole shards for them again
    every epoch, so the blocks are read by range (and the reason logged). Blocks of whole
    shards (the default's 4MB here) or shuffle_block="shard" keep the cache."""
    index = json.load(open(os.path.join(small_dataset, "index.json")))
    dataset_bytes = sum(s["filesize"] for s in index["shardlist"])
    limit = dataset_bytes - 1
    stats = {}
    for block in ("8KB", "4MB", "shard"):
        ds = VideoShardDataset(small_dataset, load_rgb=False, load_kpt=True, shuffle_block=block, shuffle_buffer="40KB",
                               cache_dir=str(tmp_path / f"cache-{block}"), cache_limit=limit)
        keys = [item["meta"]["key"] for epoch in range(2) if ds.set_epoch(epoch) is None for item in ds]
        assert sorted(keys) == sorted(2 * [s["key"] for sh in index["shardlist"] for s in sh["samples"]])
        stats[block] = ds.stats
    assert stats["8KB"]["cache_downloads"] == stats["8KB"]["cache_hits"] == 0
    assert stats["4MB"]["cache_downloads"] > 0 and stats["shard"]["cache_downloads"] > 0
    assert caplog.text.count("reading by range, without the cache") == 1  # the 8KB dataset's, only
