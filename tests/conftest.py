"""Shared fixtures: tiny synthetic sources and a written dataset."""

from __future__ import annotations

import shutil

import logging
import os

import pytest
from hypothesis import settings

from vidshard.synth import synth_source

from .helpers import VIEWS, write
from .servers import SECRET, free_port

# `make test` runs two xdist workers on two cores: an example of a pure planner may take
# longer than hypothesis' 200 ms deadline without being slow. The examples' count stays.
settings.register_profile("vidshard", deadline=None)
settings.load_profile("vidshard")


@pytest.fixture(scope="session")
def small_source(tmp_path_factory) -> str:
    """3 videos x 3 views x 75 frames, 64x48, H.264 with B-frames, keypoints, timelines."""
    root = str(tmp_path_factory.mktemp("src"))
    synth_source(root, videos=3, frames=75, views=VIEWS, size=(64, 48), seed=1)
    return root


@pytest.fixture(scope="session")
def small_dataset(small_source, tmp_path_factory) -> str:
    out = str(tmp_path_factory.mktemp("out") / "ds")
    write(small_source, out, overlap=6)
    return out


@pytest.fixture
def source_copy(small_source, tmp_path) -> str:
    """A private copy of the small source, to break on purpose."""
    dst = str(tmp_path / "src")
    shutil.copytree(small_source, dst)
    return dst


@pytest.fixture(scope="session")
def s3_server():
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    env = {"AWS_ACCESS_KEY_ID": "AKIAVIDSHARDTEST", "AWS_SECRET_ACCESS_KEY": SECRET, "AWS_DEFAULT_REGION": "us-east-1"}
    old = {k: os.environ.get(k) for k in [*env, "AWS_ENDPOINT_URL"]}
    os.environ.update(env)
    import boto3

    boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}").create_bucket(Bucket="vidshard")
    yield port
    server.stop()
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
