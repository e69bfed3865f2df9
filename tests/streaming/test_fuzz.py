"""Mutated shards never crash or hang the reader: only items or typed errors come out.

Each case runs in a forked child that the test kills after 20 s (tests/streaming/sandbox.py):
a watchdog inside the reader (SIGALRM raising TimeoutError, an OSError) would be caught by
the error handling it watches."""

from __future__ import annotations

import os
import shutil

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streaming import VideoShardDataset
from streaming.errors import SampleError
from vidshard.synth import synth_source

from ..helpers import write
from .sandbox import isolated


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    synth_source(str(root / "src"), videos=1, frames=24, views=("front", "left"), size=(32, 32), seed=2)
    write(str(root / "src"), str(root / "ds"), max_video_frames=12, shard_bytes=10**6)
    return str(root / "ds")


mutations = st.one_of(
    st.tuples(st.just("flip"), st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 7)), min_size=1, max_size=8)),
    st.tuples(st.just("truncate"), st.integers(0, 10**6)),
    st.tuples(st.just("insert"), st.tuples(st.integers(0, 10**6), st.binary(min_size=1, max_size=600))),
)


def mutate(raw: bytes, mutation) -> bytes:
    kind, arg = mutation
    data = bytearray(raw)
    if kind == "flip":
        for pos, bit in arg:
            data[pos % len(data)] ^= 1 << bit
    elif kind == "truncate":
        del data[arg % len(data):]
    else:
        pos, blob = arg
        data[pos % len(data):pos % len(data)] = blob
    return bytes(data)


def read_both_modes(path: str) -> int:
    items = 0
    for mode in ("chunk", "segment"):
        try:
            for item in VideoShardDataset(path, sample=mode, num_frames=3 if mode == "segment" else None, load_kpt=True):
                assert item["video"].shape[1] == len(item["frame_index"]) == len(item["frame_labels"])
                items += 1
        except SampleError:
            pass  # typed, with shard and key: what a mutated shard may give
    return items


@given(mutations)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_fuzzed_shard_gives_items_or_typed_errors(tiny_dataset, tmp_path_factory, mutation):
    work = tmp_path_factory.mktemp("fuzz")
    shutil.copy(os.path.join(tiny_dataset, "index.json"), work / "index.json")
    raw = open(os.path.join(tiny_dataset, "shard-000000.tar"), "rb").read()
    (work / "shard-000000.tar").write_bytes(mutate(raw, mutation))
    # In a child the parent kills: a hang fails here, whatever the reader catches inside.
    outcome = isolated(read_both_modes, str(work), timeout=20)
    assert outcome.kind == "ok", outcome
    assert outcome.grown < 1 << 30
