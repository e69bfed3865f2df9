"""The writer's tasks on a local Ray cluster give the local engine's bytes, also when workers
die in the middle of their tasks and with a bad video skipped."""

from __future__ import annotations

import functools
import json
import os
import shutil

import pytest

ray = pytest.importorskip("ray")

import tests  # noqa: E402
from shardwriter.ray_engine import RayEngine, job_runtime_env, ray_engine  # noqa: E402

from ..helpers import write  # noqa: E402
from . import ray_helpers  # noqa: E402
from .test_writer_resume import digests  # noqa: E402


@pytest.fixture(scope="module")
def local_ray():
    # A local ray.init() turns token auth on for the rest of the process (RAY_AUTH_MODE=token,
    # a token written to ~/.ray): kept off, so no later test in this worker inherits it.
    saved = os.environ.get("RAY_AUTH_MODE")
    os.environ["RAY_AUTH_MODE"] = "disabled"
    # Tests run wrappers from this package on the workers: ship it with the writer's code.
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, runtime_env=job_runtime_env([tests]))
    yield
    ray.shutdown()
    if saved is None:
        os.environ.pop("RAY_AUTH_MODE", None)
    else:
        os.environ["RAY_AUTH_MODE"] = saved


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


def test_workers_killed_mid_task_are_retried(local_ray, small_source, small_dataset, tmp_path):
    markers = tmp_path / "markers"
    markers.mkdir()

    def engine(workers):
        inner = RayEngine(max_retries=2)
        return ray_helpers.WrappedEngine(inner, functools.partial(ray_helpers.kill_mid_task, str(markers)))

    out = str(tmp_path / "out")
    report = write(small_source, out, overlap=6, engine=engine)
    killed = sorted(os.listdir(markers))
    assert [n for n in killed if n.startswith("video")] == [f"video-session_{i:03d}-0" for i in range(3)]  # one run each
    assert len([n for n in killed if n.startswith("shard")]) == report.shards >= 2  # every task died once, mid-way
    assert digests(out) == digests(small_dataset)


def test_submitted_job_keeps_its_own_code(monkeypatch):
    from shardwriter import ray_engine as engine

    monkeypatch.delenv("RAY_JOB_CONFIG_JSON_ENV_VAR", raising=False)
    assert not engine._submitted_with_code()  # vidshard write: ships streaming + shardwriter itself
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", json.dumps({"runtime_env": {"working_dir": "gcs://x.zip"}}))
    assert engine._submitted_with_code()  # ray job submit --working-dir .: the job's copy is used
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", json.dumps({"runtime_env": {"pip": ["av"]}}))
    assert not engine._submitted_with_code()  # merged: the job's pip plus our py_modules
    assert [os.path.basename(p) for p in engine.code_paths()] == ["streaming", "shardwriter"]


def test_the_ray_extra_is_the_full_ray():
    """docs/operations.md's recipe: `pip install vidshard[ray,s3]` on the head must bring the
    dashboard's job server (`ray job submit`) and Ray Client (`ray://`): the minimal `ray`
    has neither (Ray Client: "requires pip package `ray[client]`")."""
    import tomllib

    with open(os.path.join(os.path.dirname(tests.__file__), os.pardir, "pyproject.toml"), "rb") as f:
        extras = tomllib.load(f)["project"]["optional-dependencies"]
    assert [d for d in extras["ray"] if d.startswith("ray[default]")], extras["ray"]


def test_close_returns_when_no_task_can_write_any_more(local_ray, tmp_path):
    """on_error fail discards what a run wrote right after closing the engine: a cancelled
    task still running then would write into OUTPUT after the discard."""
    import time

    engine = RayEngine()
    path = str(tmp_path / "written")
    engine.submit(ray_helpers.late_write, path)
    deadline = time.time() + 60
    while not os.path.exists(path + ".started") and time.time() < deadline:
        time.sleep(0.05)
    assert os.path.exists(path + ".started")  # running, not queued
    engine.close()
    at_close = os.path.exists(path)
    time.sleep(4)
    assert os.path.exists(path) == at_close
