"""The writer's tasks on a local Ray cluster give the local engine's bytes, also when a
worker dies mid-task and with a bad video skipped."""

from __future__ import annotations

import functools
import json
import os
import shutil

import pytest

ray = pytest.importorskip("ray")

from shardwriter.ray_engine import ray_engine  # noqa: E402

from ..helpers import write  # noqa: E402
from .ray_helpers import crash_first_attempt  # noqa: E402
from .test_writer_resume import digests  # noqa: E402


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def source_with_bad_video(small_source, tmp_path_factory):
    src = str(tmp_path_factory.mktemp("raysrc") / "src")
    shutil.copytree(small_source, src)
    with open(os.path.join(src, "videos", "session_002", "left.mp4"), "wb") as f:
        f.write(b"not a video" * 100)
    return src


def test_ray_output_is_byte_identical_to_local(local_ray, source_with_bad_video, tmp_path):
    local, remote = str(tmp_path / "local"), str(tmp_path / "ray")
    write(source_with_bad_video, local, overlap=6, on_error="skip", workers=2)
    report = write(source_with_bad_video, remote, overlap=6, on_error="skip", engine=ray_engine())
    assert report.videos == 2 and [p.video_id for p in report.skipped] == ["session_002"]
    assert digests(remote) == digests(local)
    assert json.load(open(os.path.join(remote, "errors.json")))["skipped"][0]["video_id"] == "session_002"


def test_worker_killed_mid_task_is_retried(local_ray, small_source, small_dataset, tmp_path):
    markers = tmp_path / "markers"
    markers.mkdir()
    inner = ray_engine(max_retries=2)

    def engine(fn, tasks):
        return inner(functools.partial(crash_first_attempt, fn, str(markers)), tasks)

    out = str(tmp_path / "out")
    write(small_source, out, overlap=6, engine=engine)
    assert len(os.listdir(markers)) == 3  # every task died once
    assert digests(out) == digests(small_dataset)
