"""The read path's byte-range stage: a window's samples cut into runs (a pure planner)."""

from __future__ import annotations

import os

from streaming.reading import runs
from streaming.shards import load_manifest


def test_runs_join_adjacent_ranges_of_one_shard_only(small_dataset):
    manifest = load_manifest(os.path.join(small_dataset, "index.json"))
    shard = next(i for i, s in enumerate(manifest.shards) if len(s.samples) >= 3)
    samples = manifest.shards[shard].samples
    other = next(i for i in range(len(manifest.shards)) if i != shard)
    pairs = [(shard, 0), (shard, 1), (other, 0), (shard, 2), (shard, 0)]
    got = [(r.shard, r.samples, r.start, r.end) for r in runs(manifest, pairs)]
    first = manifest.shards[other].samples[0]
    assert got == [(shard, [0, 1], samples[0].offset, samples[1].offset + samples[1].size),
                   (other, [0], first.offset, first.offset + first.size),
                   (shard, [2], samples[2].offset, samples[2].offset + samples[2].size),  # not after sample 1 in the list
                   (shard, [0], samples[0].offset, samples[0].offset + samples[0].size)]  # backwards: a run of its own
    assert list(runs(manifest, [])) == []


def test_one_retry_policy_for_every_reader():
    """remote.retry: transient faults retried (counted), a permanent one raised at once naming
    the redacted URL, the reader's own verdicts passed through untouched, never retried."""
    import collections

    import pytest

    from streaming.errors import RangeNotSupportedError, ReaderError, SampleError, ShardReadError, StorageError
    from streaming.remote import StorageOptions, retry

    assert issubclass(SampleError, ReaderError) and issubclass(StorageError, ReaderError)
    assert not issubclass(StorageError, OSError)  # an `except OSError` for the disk never swallows it
    options, url = StorageOptions(retries=3, backoff_s=0.001, max_backoff_s=0.002), "https://u:pw@host/a.tar?sig=s3cret"
    stats, faults = collections.Counter(), iter([ConnectionResetError(), TimeoutError()])

    def flaky():
        fault = next(faults, None)
        if fault:
            raise fault
        return b"ok"

    def raising(exc):
        def attempt():
            raise exc
        return attempt

    assert retry(flaky, "reading bytes [0, 2)", url, options, stats) == b"ok" and stats["retries"] == 2
    for permanent, said in ((FileNotFoundError("x"), "not found"), (PermissionError("no"), "failed after 1 attempt")):
        with pytest.raises(ShardReadError, match=said) as info:
            retry(raising(permanent), "reading bytes [0, 2)", url, options, stats)
        assert "pw" not in str(info.value) and "s3cret" not in str(info.value) and "host/a.tar" in str(info.value)
    verdict = RangeNotSupportedError("ignores Range")
    with pytest.raises(RangeNotSupportedError) as info:
        retry(raising(verdict), "reading bytes [0, 2)", url, options, stats)
    assert info.value is verdict and stats["retries"] == 2 and stats["failed_reads"] == 2


def test_an_os_error_opening_a_local_shard_stops_the_loader_even_when_skipping(small_dataset, monkeypatch):
    """EMFILE (or EIO, ENOMEM) opening a local shard is this process's trouble, not the
    samples': under on_error="skip" it stops the epoch instead of skipping every sample."""
    import errno

    import pytest

    import streaming.ranges as ranges
    from streaming import VideoShardDataset

    def emfile(*args, **kwargs):
        raise OSError(errno.EMFILE, "Too many open files")

    ds = VideoShardDataset(small_dataset, load_rgb=False, load_kpt=True, on_error="skip")
    monkeypatch.setattr(ranges, "open", emfile, raising=False)  # open_local's open()
    with pytest.raises(OSError) as raised:
        next(iter(ds))
    assert raised.value.errno == errno.EMFILE
    assert not any(k.startswith("skipped_") for k in ds.stats)


def test_a_bug_in_an_attempt_is_raised_unchanged_not_a_read_error():
    """retry classifies storage faults only: a KeyError or TypeError in an attempt is a bug,
    raised as it is (never a ShardReadError that on_error="skip" would skip)."""
    import collections

    import pytest

    from streaming.remote import StorageOptions, retry

    stats = collections.Counter()
    for bug in (KeyError("offset"), TypeError("unsupported operand"), ValueError("bad")):
        def attempt(bug=bug):
            raise bug

        with pytest.raises(type(bug)) as info:
            retry(attempt, "reading bytes [0, 2)", "https://host/a.tar", StorageOptions(retries=3, backoff_s=0.001), stats)
        assert info.value is bug
    assert stats["retries"] == 0 and stats["failed_reads"] == 0


def test_a_body_cut_short_is_a_transient_fault_not_a_crash():
    """http.client's IncompleteRead is no OSError: still a storage fault, retried, then the
    sample's ShardReadError (never an exception that kills a DataLoader worker)."""
    import collections
    import http.client

    import pytest

    from streaming.errors import ShardReadError
    from streaming.remote import StorageOptions, retry

    stats = collections.Counter()

    def attempt():
        raise http.client.IncompleteRead(b"abc", 10)

    with pytest.raises(ShardReadError):
        retry(attempt, "reading bytes [0, 13)", "https://user:pw@host/a.tar", StorageOptions(retries=2, backoff_s=0.001), stats)
    assert stats["retries"] == 2 and stats["failed_reads"] == 1


def test_a_broken_read_names_no_credentials():
    """_caught's message for an OSError out of a stream: the OSError's text redacted."""
    from streaming.errors import ShardReadError
    from streaming.reading import _caught

    def broken():
        raise OSError("reset reading https://u:pw@host/a.tar?X-Amz-Signature=s3cret")

    error = _caught(broken, "https://***@host/a.tar")
    assert isinstance(error, ShardReadError) and "pw@" not in str(error) and "s3cret" not in str(error), error
    assert "read failed" in str(error) and "host/a.tar" in str(error)


def test_a_plain_get_read_lets_keyboard_interrupt_pass_without_releasing(monkeypatch):
    """WholeGetReader._read releases its response (reconnects next attempt) on errors only."""
    import collections

    import pytest

    from streaming.ranges import WholeGetReader
    from streaming.remote import StorageOptions

    reader = WholeGetReader(None, "p", "http://host/a.tar", 0, 10, StorageOptions(), collections.Counter())
    reader.response = object()
    released = []
    monkeypatch.setattr(reader, "_release", lambda: released.append(1))

    def interrupted(n):
        raise KeyboardInterrupt

    monkeypatch.setattr(reader, "_chunk", interrupted)
    with pytest.raises(KeyboardInterrupt):
        reader._read(4)
    assert released == []

    def cut(n):
        raise EOFError("cut")

    monkeypatch.setattr(reader, "_chunk", cut)
    with pytest.raises(EOFError):
        reader._read(4)
    assert released == [1]
