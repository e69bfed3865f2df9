"""Same input + config -> the same bytes, however the job ran: serial, parallel, or killed
with SIGKILL and resumed."""

from __future__ import annotations

import hashlib
import os

import pytest

from shardwriter.errors import WriterError

from ..helpers import write


def digests(out: str) -> dict[str, str]:
    return {
        name: hashlib.sha256(open(os.path.join(out, name), "rb").read()).hexdigest()
        for name in sorted(os.listdir(out))
    }


def test_reruns_and_worker_counts_give_identical_bytes(small_source, small_dataset, tmp_path):
    again = str(tmp_path / "again")
    parallel = str(tmp_path / "parallel")
    write(small_source, again, overlap=6)
    write(small_source, parallel, overlap=6, workers=2)
    assert digests(again) == digests(small_dataset) == digests(parallel)
    assert not os.path.exists(os.path.join(again, ".vidshard-work"))


def test_seed_changes_only_the_order(small_source, small_dataset, tmp_path):
    other = str(tmp_path / "other")
    write(small_source, other, overlap=6, seed=7)
    assert digests(other)["index.json"] != digests(small_dataset)["index.json"]


def test_finished_output_is_kept_or_refused(small_source, small_dataset):
    before = digests(small_dataset)
    report = write(small_source, small_dataset, overlap=6)  # same settings: nothing to do
    assert report.chunks == 9 and digests(small_dataset) == before
    with pytest.raises(WriterError, match="other settings"):
        write(small_source, small_dataset, overlap=5)


def test_unrelated_output_is_refused(small_source, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(WriterError, match="not empty"):
        write(small_source, str(tmp_path))


# SIGKILL at 20 random points, then resume: tests/shardwriter/test_writer_kills.py
