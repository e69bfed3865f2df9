"""Shared fixtures: tiny synthetic sources and a written dataset."""

from __future__ import annotations

import shutil

import pytest

from shardwriter.synth import synth_source

from .helpers import VIEWS, write


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
