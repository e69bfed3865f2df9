"""The local store's atomic writes when two tasks write the same name at once (a task Ray
retried on another node while the first attempt, on a node it lost contact with, runs on)."""

from __future__ import annotations

import os

from shardwriter.store import open_store


def test_two_writers_of_one_name_never_publish_a_mix(tmp_path):
    store = open_store(str(tmp_path))
    data = bytes(range(256)) * 4096  # 1 MiB, the same bytes from both (the tasks are deterministic)
    first = store.create("shard-000000.tar")
    a = first.__enter__()
    a.write(data[: len(data) // 2])
    a.flush()
    with store.create("shard-000000.tar") as b:  # the second attempt starts and writes a little
        b.write(data[:1000])
        b.flush()
        a.write(data[len(data) // 2 :])  # the first attempt finishes and publishes
        first.__exit__(None, None, None)
        with open(tmp_path / "shard-000000.tar", "rb") as f:
            assert f.read() == data  # published: whole, whatever the other attempt is doing
        b.write(data[1000:])
    with open(tmp_path / "shard-000000.tar", "rb") as f:
        assert f.read() == data
    assert os.listdir(tmp_path) == ["shard-000000.tar"]  # no temporary file left
