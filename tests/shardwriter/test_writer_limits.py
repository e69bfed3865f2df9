"""The writer writes only what the reader reads (issue 22, points 4 and 6): the reader's own
limits (streaming.format.Limits) and key format, applied before the first byte is written,
each refusal naming the file; OUTPUT is left as it was, so the corrected command runs."""

from __future__ import annotations

import json
import os
import re

import numpy as np
import pytest

from shardwriter.errors import WriterError
from shardwriter.limits import LIMITS, widest_meta
from shardwriter.encode import view_encode
from shardwriter.job import WriteConfig
from shardwriter.probe import ProbeTask, run_probe_task
from streaming import VideoShardDataset
from streaming.format import Limits

from ..helpers import VIEWS, read_dataset, write
from ..recordings import ffmpeg

VID = "session_001"


def refused(src: str, out: str, **kw) -> str:
    with pytest.raises(WriterError) as info:
        write(src, out, **kw)
    assert not os.listdir(out) if os.path.exists(out) else True  # no shard, no index, no work area (job.json)
    return str(info.value)


def long_source(root: str, frames: int, timeline: list) -> str:
    folder = os.path.join(root, "videos", "long")
    os.makedirs(folder)
    os.makedirs(os.path.join(root, "annotations"))
    ffmpeg("-f", "lavfi", "-i", "color=c=gray:size=16x16:rate=1000", "-frames:v", str(frames), "-c:v", "libx264",
           "-preset", "ultrafast", "-g", "100000", os.path.join(folder, "front.mp4"))
    with open(os.path.join(root, "annotations", "long.json"), "w") as f:
        json.dump({"timeline": timeline}, f)
    return root


def test_more_chunks_than_the_key_numbers_is_refused_before_anything_is_written(tmp_path):
    src = long_source(str(tmp_path / "src"), 100_002, [])
    out = str(tmp_path / "out")
    message = refused(src, out, max_video_frames=1)
    assert os.path.join(src, "videos", "long") in message and "100002 chunks" in message, message
    assert "5 digits" in message and "--max-video-frames 2 " in message, message
    # The corrected command is not refused by anything the failed one left (no job.json).
    message = refused(src, out, max_video_frames=2, overlap=1)  # 100001 chunks: still one too many
    assert "100001 chunks" in message and "--max-video-frames 3 " in message, message


def test_more_segments_in_a_chunk_than_the_reader_takes_is_refused(tmp_path):
    segments = [{"start": i, "end": i + 1, "label": "a"} for i in range(LIMITS.max_segments + 1)]
    src = long_source(str(tmp_path / "src"), LIMITS.max_segments + 2, segments)
    message = refused(src, str(tmp_path / "out"), max_video_frames=None)
    assert os.path.join(src, "annotations", "long.json") in message and "100001 timeline segments" in message, message


def test_an_annotation_too_large_for_meta_json_is_refused_naming_it(source_copy, tmp_path):
    path = os.path.join(source_copy, "annotations", f"{VID}.json")
    with open(path) as f:
        annotation = json.load(f)
    annotation["notes"] = "x" * LIMITS.max_json_bytes  # copied into every chunk's meta.json
    with open(path, "w") as f:
        json.dump(annotation, f)
    message = refused(source_copy, str(tmp_path / "out"))
    assert path in message and "Limits.max_json_bytes" in message and "'notes'" in message, message
    report = write(source_copy, str(tmp_path / "skip"), on_error="skip")  # the other videos: the reader reads them
    assert report.videos == 2 and sum(1 for _ in VideoShardDataset(str(tmp_path / "skip"))) > 0


def test_a_keypoint_array_name_index_json_cannot_hold_is_refused(source_copy, tmp_path):
    folder = os.path.join(source_copy, "keypoints", VID, "front")  # the video's first file of its kind
    first = os.path.join(folder, sorted(os.listdir(folder))[0])
    np.savez(first, **{"joints/2d": np.zeros((17, 2), np.float32)})
    message = refused(source_copy, str(tmp_path / "out"))
    assert first in message and "'sam3d_body.joints/2d'" in message and "index.json" in message, message


def test_meta_json_is_sized_before_writing_to_what_is_written(source_copy, tmp_path):
    """The driver's bound is at least every meta.json written, and close to the largest."""
    out = str(tmp_path / "out")
    config = WriteConfig(max_video_frames=7, overlap=2, shard_bytes=150_000)
    write(source_copy, out, max_video_frames=7, overlap=2)
    _, samples = read_dataset(out)
    probe = run_probe_task(ProbeTask(source=source_copy, video_id=VID, views=VIEWS, truncate_views=False,
                                     encode=config.encode))
    views = [view_encode(p, s, config.encode) for p, s in zip(probe.spec.paths, probe.spec.sources)]
    bound = widest_meta(probe.spec, config, views, frozenset(n.partition(".")[0] for n in probe.schema))
    sizes = [len(parts["meta.json"]) for key, parts in samples.items() if key.startswith(VID)]
    assert max(sizes) <= bound <= max(sizes) + 128, (max(sizes), bound)


def test_the_writer_applies_the_readers_default_limits():
    assert LIMITS == Limits()  # one definition (streaming.format), read by both sides


def test_a_clip_over_the_readers_member_limit_stops_its_video(source_copy, tmp_path, monkeypatch):
    """Clip sizes are known only once encoded: the encode task refuses the video then, naming
    its file (in-process here, with the limit lowered: a real one takes 2 GiB)."""
    import shardwriter.task as task_module
    from shardwriter.errors import SourceError
    from shardwriter.task import RunTask, run_encode_task

    config = WriteConfig(max_video_frames=30, shard_bytes=150_000)
    probe = run_probe_task(ProbeTask(source=source_copy, video_id=VID, views=VIEWS, truncate_views=False,
                                     encode=config.encode))
    task = RunTask(spec=probe.spec, max_video_frames=30, overlap=0, encode=config.encode, keypoint_schema=probe.schema,
                   keypoint_origin=probe.origin, work=str(tmp_path / "work"), first=0, stop=1)
    monkeypatch.setattr(task_module, "MAX_MEMBER_BYTES", 1000)
    with pytest.raises(SourceError) as info:
        run_encode_task(task)
    assert info.value.path == probe.spec.paths[0] and "Limits.max_member_bytes" in info.value.reason, info.value
    assert not os.path.exists(tmp_path / "work" / "spool")  # nothing of the video spooled


@pytest.mark.parametrize("limit, why", [
    ({"max_item_bytes": 64 * 48 * 3 * 30 * 3 - 1}, r"a chunk-mode item of 30 frames of every view would take 829440 bytes, "
                                                    r"over the reader's limit of 829439 \(Limits.max_item_bytes\)"),
    ({"max_member_bytes": 10_000}, r"a chunk's keypoint archive of 30 frames may take \d+ bytes, over the reader's limit of "
                                   r"10000 per member \(Limits.max_member_bytes\)"),
])
def test_a_chunk_the_reader_would_refuse_is_refused_before_writing(source_copy, tmp_path, monkeypatch, limit, why):
    """(the reader's limits lowered in-process: real ones take gigabytes to reach)"""
    import dataclasses

    import shardwriter.limits

    monkeypatch.setattr(shardwriter.limits, "LIMITS", dataclasses.replace(Limits(), **limit))
    message = refused(source_copy, str(tmp_path / "out"), max_video_frames=30, workers=1)
    assert re.search(why, message) and "session_" in message, message


def test_a_frame_rate_the_reader_cannot_hold_is_refused(source_copy):
    import dataclasses
    from fractions import Fraction

    from shardwriter.errors import SourceError
    from shardwriter.limits import check_video

    config = WriteConfig(max_video_frames=30)
    probe = run_probe_task(ProbeTask(source=source_copy, video_id=VID, views=VIEWS, truncate_views=False, encode=config.encode))
    with pytest.raises(SourceError, match=r"a frame rate of 10000001 fps, outside the reader's \[1/1000000, 1000000\]"):
        check_video(dataclasses.replace(probe.spec, fps=Fraction(10**7 + 1)), config, source_copy)
