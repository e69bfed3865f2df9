"""vidshard items from webdataset and wids pipelines (streaming/wds.py): field for field the
items VideoShardDataset builds for the same samples, proven from pixels, through webdataset's
own node and worker splitting and a 2-worker WebLoader; index.json opened by the wids
package (local, and over HTTP); a hostile sample is the same typed error or logged skip."""

from __future__ import annotations

import os
import re
import shutil

import pytest
import torch
import webdataset as wds

from streaming import VideoShardDataset, wds_items
from streaming.errors import DecodeError

from ..servers import HTTPFileServer
from .conftest import MAP_VIEWS
from .hostile_shards import change_first, replace
from .test_map_dataset import MODES, check_pixels, identity, same_item


def shard_urls(path: str) -> list[str]:
    return sorted(os.path.join(path, name) for name in os.listdir(path) if name.endswith(".tar"))


def reference(path, mode: str, kw: dict) -> dict[tuple, dict]:
    stream = VideoShardDataset(path, sample=mode, shuffle=False, **kw)
    stream.set_epoch(1)
    return {identity(item)[:2]: item for item in stream}


def same(a: dict, b: dict) -> None:
    """Field for field (meta.padded included); keypoints array by array."""
    check_pixels(a)
    assert identity(a) == identity(b)
    same_item({k: v for k, v in a.items() if k != "keypoints"}, {k: v for k, v in b.items() if k != "keypoints"})
    assert a["keypoints"].keys() == b["keypoints"].keys()
    assert all(torch.equal(a["keypoints"][n], b["keypoints"][n]) for n in a["keypoints"])


@pytest.mark.parametrize("mode", MODES)
def test_a_webdataset_pipeline_yields_the_datasets_items(map_dataset, mode):
    kw = {**MODES[mode], "load_kpt": True}
    want = reference(map_dataset, mode, kw)
    stage = wds_items(sample=mode, seed=0, **kw)
    stage.set_epoch(1)  # clip windows of the same (seed, epoch)
    pipeline = wds.WebDataset(shard_urls(map_dataset), shardshuffle=False, empty_check=False).shuffle(5).compose(stage)
    got = list(pipeline)
    assert len(got) == len(want) > 0
    for item in got:
        same(item, want[identity(item)[:2]])


def _loader_items(urls: list[str], rank: int) -> list[tuple]:
    os.environ.update(RANK=str(rank), WORLD_SIZE="2")
    try:
        stage = wds_items(sample="segment", num_frames=3, img_size=(16, 20), views=["left", "front"])
        pipeline = wds.WebDataset(urls, shardshuffle=False, nodesplitter=wds.split_by_node,
                                  workersplitter=wds.split_by_worker, empty_check=False).compose(stage)
        loader = wds.WebLoader(pipeline, batch_size=None, num_workers=2)
        seen = []
        for item in loader:
            video, frames = item["video"], item["frame_index"].tolist()
            assert video.shape == (2, 3, 3, 16, 20)
            for v, view in enumerate(("left", "front")):
                assert [wds_barcode(video[v, t]) for t in range(len(frames))] == [(f, MAP_VIEWS.index(view)) for f in frames]
            seen.append(identity(item))
        return seen
    finally:
        del os.environ["RANK"], os.environ["WORLD_SIZE"]


def wds_barcode(frame):
    from vidshard.synth import read_barcode

    return read_barcode(frame.numpy())


def test_split_by_node_and_worker_through_a_webloader(map_dataset):
    """Two ranks (webdataset's split_by_node reads RANK/WORLD_SIZE), two workers each
    (split_by_worker): together every item exactly once, each proven from pixels."""
    urls = shard_urls(map_dataset)
    assert len(urls) >= 4  # every rank's worker has a shard
    ranks = [_loader_items(urls, rank) for rank in (0, 1)]
    want = sorted(identity(i) for i in reference(map_dataset, "segment", {"num_frames": 3, "img_size": (16, 20),
                                                                         "views": ["left", "front"]}).values())
    assert ranks[0] and ranks[1] and not set(ranks[0]) & set(ranks[1])
    assert sorted(ranks[0] + ranks[1]) == want


@pytest.mark.parametrize("served", ["local", "http"])
def test_wids_opens_index_json_and_its_samples_give_the_items(map_dataset, tmp_path, served):
    """The wids package reads index.json (a wids shard index) and every sample; the same
    stage turns each into the dataset's items. Over HTTP wids downloads each shard whole with
    curl (into its own cache); on S3 it runs the `aws` CLI, which vidshard does not install."""
    wids = pytest.importorskip("wids")
    if served == "http" and shutil.which("curl") is None:
        pytest.fail("the FFmpeg-using tests' machine lacks curl: install it (apt-get install curl)")
    want = reference(map_dataset, "chunk", {"load_kpt": True})
    stage = wds_items(source=map_dataset, sample="chunk", load_kpt=True)
    if served == "local":
        samples = wids.ShardListDataset(os.path.join(map_dataset, "index.json"), transformations=[],
                                        cache_dir=str(tmp_path / "wids"))
        got = [item for i in range(len(samples)) for item in stage.of(samples[i])]
    else:
        with HTTPFileServer(map_dataset) as http:
            samples = wids.ShardListDataset(f"http://127.0.0.1:{http.port}/index.json", transformations=[],
                                            cache_dir=str(tmp_path / "wids"))
            got = [item for i in range(len(samples)) for item in stage.of(samples[i])]
    assert len(samples) == sum(1 for _ in want) and len(got) == len(want)
    for item in got:
        same(item, want[identity(item)[:2]])


def test_a_hostile_sample_is_the_same_typed_error_or_a_logged_skip(map_dataset, tmp_path, caplog):
    copy = str(tmp_path / "ds")
    shutil.copytree(map_dataset, copy)
    key = change_first(copy, replace("front.mp4", lambda k, d: b"\xff" * len(d)))
    with pytest.raises(DecodeError) as streamed:
        list(VideoShardDataset(copy, shuffle=False))
    with pytest.raises(DecodeError) as piped:
        list(wds.WebDataset(shard_urls(copy), shardshuffle=False, empty_check=False).compose(wds_items()))
    assert str(piped.value) == str(streamed.value) and piped.value.key == key and piped.value.member == f"{key}.front.mp4"
    stage = wds_items(on_error="skip")
    with caplog.at_level("WARNING", logger="vidshard"):
        keys = [item["meta"]["key"] for item in wds.WebDataset(shard_urls(copy), shardshuffle=False,
                                                                 empty_check=False).compose(stage)]
    assert key not in keys and len(keys) == len(VideoShardDataset(copy)) - 1
    assert stage.stats["skipped_decode"] == 1
    assert [r for r in caplog.records if key in r.getMessage() and re.search("clip does not decode", r.getMessage())]


def test_decoded_members_and_samples_of_another_dataset_are_refused(map_dataset, small_dataset):
    """A pipeline that decoded members first (.decode()) hands over no bytes; a sample of
    another dataset's shard (the same key, elsewhere in this index.json) is refused naming
    both shards."""
    from streaming.errors import ShardFormatError

    with pytest.raises(ShardFormatError, match=r"member (meta|timeline).json is a dict, not bytes"):
        list(wds.WebDataset(shard_urls(map_dataset), shardshuffle=False, empty_check=False).decode().compose(wds_items()))
    stage = wds_items(source=map_dataset)
    with pytest.raises(ShardFormatError, match=r"sample read from .*/shard-000000.tar, index.json lists it in shard-000002.tar"):
        list(stage(wds.WebDataset(shard_urls(small_dataset), shardshuffle=False, empty_check=False)))


def test_the_readme_pipeline_batches_with_collate(map_dataset):
    from streaming import collate

    stage = wds_items(sample="segment", num_frames=4, img_size=(16, 16), load_kpt=True)
    pipeline = (wds.WebDataset(shard_urls(map_dataset), shardshuffle=100, nodesplitter=wds.split_by_node, empty_check=False)
                .shuffle(1000).compose(stage).batched(3, collation_fn=collate))
    batches = list(pipeline)
    assert batches and batches[0]["video"].shape == (3, 2, 4, 3, 16, 16) and batches[0]["frame_index"].shape == (3, 4)
    assert sum(len(b["frame_index"]) for b in batches) == len(VideoShardDataset(map_dataset, sample="segment", num_frames=4))


def test_clip_windows_follow_the_key_whatever_shards_a_dataset_is_given(map_dataset):
    """A dataset of two of the shards and a pipeline over the same two draw the same clip
    windows (seeded by (seed, epoch, key), not by a shard's position in what each was given)."""
    urls = shard_urls(map_dataset)[2:4]
    want = reference(urls, "clip", {"num_frames": 4})
    stage = wds_items(sample="clip", num_frames=4)
    stage.set_epoch(1)
    got = list(wds.WebDataset(urls, shardshuffle=False, empty_check=False).compose(stage))
    assert len(got) == len(want) > 0
    for item in got:
        same_item({k: v for k, v in item.items() if k != "keypoints"}, want[identity(item)[:2]])


def test_pipe_urls_and_samples_without_a_url(map_dataset):
    """`pipe:` shards with source= give the items; a sample with no URL and no source= is refused, saying what to pass."""
    urls = [f"pipe:cat {u}" for u in shard_urls(map_dataset)]
    got = list(wds.WebDataset(urls, shardshuffle=False, empty_check=False).compose(wds_items(source=map_dataset)))
    assert sorted(identity(i) for i in got) == sorted(identity(i) for i in reference(map_dataset, "chunk", {}).values())
    with pytest.raises(ValueError, match=r"no folder to find index.json in; pass wds_items\(source=...\)"):
        wds_items().of({"__key__": "session_000_00000", "meta.json": b"{}"})
    with pytest.raises(ValueError, match="pass wds_items"):
        list(wds.WebDataset(urls, shardshuffle=False, empty_check=False).compose(wds_items()))
