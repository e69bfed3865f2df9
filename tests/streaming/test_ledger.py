"""The resume bookkeeping of one partition (streaming/ledger.py), without files: skipped items
are replaced so the count stays the plan's, and a resume from any delivered item's state
continues exactly as the uninterrupted run did."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streaming.errors import DecodeError, SampleError
from streaming.ledger import Ledger, NothingToPad, Planned, deliver


def run(outcomes: list[bool], ledger: Ledger = Ledger(), padded: set[int] = frozenset()):
    """(position, padded, substitute, ledger) of every item; position p fails when not outcomes[p]."""
    planned = [Planned(position=p, padded=p in padded) for p in range(ledger.consumed, len(outcomes))]
    skips = []

    def build(position):
        if not outcomes[position]:
            raise DecodeError("broken clip", shard="s.tar", key=f"k{position}")
        return position

    out = [(d.item, d.padded, d.substitute, d.ledger) for d in deliver(planned, build, ledger, skips.append)]
    return out, skips


def test_a_skip_is_replaced_by_a_repeat_right_after_the_next_good_item():
    out, skips = run([True, False, False, True, True])
    assert [(p, pad) for p, pad, _, _ in out] == [(0, False), (3, False), (3, True), (3, True), (4, False)]
    assert [s.key for s in skips] == ["k1", "k2"]
    final = out[-1][3]
    assert final == Ledger(consumed=5, owed=0, last_good=4, skipped=(("decode", 2),))


def test_skips_at_the_end_repeat_the_last_good_item():
    out, _ = run([True, True, False])
    assert [(p, pad) for p, pad, _, _ in out] == [(0, False), (1, False), (1, True)]


def test_nothing_to_pad_with_is_an_error():
    with pytest.raises(NothingToPad, match="every item of this partition .3. failed"):
        run([False, False, False])


def test_raise_policy_stops_at_the_first_failure():
    def on_skip(exc):
        raise exc

    items = iter(deliver([Planned(position=0, padded=False)], lambda p: (_ for _ in ()).throw(DecodeError("x", shard="s")),
                         Ledger(), on_skip))
    with pytest.raises(DecodeError):
        next(items)


def test_state_round_trip():
    ledger = Ledger(consumed=7, owed=2, last_good=5, skipped=(("format", 1), ("read", 1)))
    assert Ledger.from_state(ledger.to_state()) == ledger
    with pytest.raises(ValueError, match="negative"):
        Ledger.from_state({**Ledger().to_state(), "yielded": -1})


@given(st.lists(st.booleans(), min_size=1, max_size=40).filter(any), st.data())
@settings(max_examples=300, deadline=None)
def test_resume_from_any_delivered_item_continues_exactly(outcomes, data):
    padded = set(data.draw(st.lists(st.integers(0, len(outcomes) - 1), max_size=5)))
    full, _ = run(outcomes, padded=padded)
    # Every planned item is delivered once or replaced once: the count is the plan's.
    assert len(full) == len(outcomes)
    assert [p for p, _, sub, _ in full if not sub] == [p for p, ok in enumerate(outcomes) if ok]
    assert [pad for p, pad, sub, _ in full if not sub] == [p in padded for p, ok in enumerate(outcomes) if ok]
    assert all(pad for _, pad, sub, _ in full if sub)
    # Interrupted after any item (a checkpoint), resumed from its state, possibly again and again.
    cuts = sorted(set(data.draw(st.lists(st.integers(1, len(full)), min_size=1, max_size=3))))
    done, ledger = [], Ledger()
    for cut in cuts:
        rest, _ = run(outcomes, Ledger.from_state(ledger.to_state()), padded)
        rest = rest[: cut - len(done)]
        done += rest
        ledger = done[-1][3] if done else ledger
    rest, _ = run(outcomes, Ledger.from_state(ledger.to_state()), padded)
    assert [x[:3] for x in done + rest] == [x[:3] for x in full]


def test_on_skip_sees_typed_errors():
    _, skips = run([True, False])
    assert all(isinstance(s, SampleError) and s.reason == "decode" for s in skips)


def flaky_run(outcomes: list[bool], failing_calls: set[int]):
    """Like run(), but the n-th call of build fails (a read failing after its retries) for
    every n in failing_calls, whatever it builds."""
    calls = []

    def build(position):
        calls.append(position)
        if len(calls) - 1 in failing_calls or not outcomes[position]:
            raise DecodeError("broken or unreadable", shard="s.tar", key=f"k{position}")
        return position

    skips = []
    planned = [Planned(position=p, padded=False) for p in range(len(outcomes))]
    out = [(d.item, d.substitute) for d in deliver(planned, build, Ledger(), skips.append)]
    return out, skips


def test_a_substitute_that_fails_to_build_is_owed_not_fatal():
    # Position 1 fails; its substitute (a repeat of 2, the 4th build call) fails too: the debt
    # moves on to the next delivered item, and the partition still yields its 4 items.
    out, skips = flaky_run([True, False, True, True], failing_calls={3})
    assert out == [(0, False), (2, False), (3, False), (3, True)] and len(skips) == 2


def test_a_failing_substitute_at_the_end_is_tried_again():
    out, skips = flaky_run([True, True, False], failing_calls={3})  # the repeat of 1 fails once
    assert out == [(0, False), (1, False), (1, True)] and len(skips) == 2
    with pytest.raises(NothingToPad, match="failed to build 3 times"):
        flaky_run([True, True, False], failing_calls={3, 4, 5})


@pytest.mark.parametrize("drop", ["yielded", "owed", "last_good", "skipped"])
def test_a_partial_state_is_a_resume_error_naming_what_is_missing(drop):
    from streaming.errors import ResumeError

    state = Ledger().delivered(0).to_state()
    Ledger.from_state(state)
    with pytest.raises(ResumeError, match=f"without {drop}"):
        Ledger.from_state({k: v for k, v in state.items() if k != drop})
    with pytest.raises(ResumeError, match="not counts"):
        Ledger.from_state({**state, "skipped": ["decode"]})


def test_a_partial_loader_state_is_a_resume_error(small_dataset):
    from streaming import VideoShardDataset
    from streaming.errors import ResumeError
    from streaming.resume import STATE_KEY
    from streaming.world import World

    ds = VideoShardDataset(small_dataset, load_rgb=False, load_kpt=True)
    ds.load_state_dict({STATE_KEY: 1, "spec": ds.spec(World()).to_json(), "yielded": 3})
    with pytest.raises(ResumeError, match="without rank, worker"):
        next(iter(ds))
    ds.load_state_dict({STATE_KEY: 1, "spec": ds.spec(World()).to_json(), "rank": 0, "worker": 0, "yielded": 3})
    with pytest.raises(ResumeError, match="without owed, last_good, skipped"):
        next(iter(ds))
