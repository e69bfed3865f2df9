"""The writer's pure planning functions, checked over many inputs (no files)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shardwriter.media import SEEK_TRIES, entry_points
from shardwriter.plan import (
    MIN_RUN_FRAMES,
    cut_runs,
    run_frames,
    SourceSegment,
    check_timeline,
    chunk_plan,
    clip_timeline,
    closes_shard,
    interleave,
    sample_order,
    tar_file_bytes,
)


def plan_shards(sample_bytes: Sequence[int], max_shard_bytes: int) -> list[range]:
    """Pack samples, in order, into shards of at most `max_shard_bytes` tar bytes.

    Greedy: a shard is closed when the next sample would push it past the limit. A
    sample larger than the limit gets a shard of its own (never split, never dropped).
    The writer applies this rule one sample at a time (`closes_shard`), as the samples'
    sizes become known (shardwriter/schedule.py); this whole-list form is the reference the
    tests hold the writer's shards to.
    """
    if max_shard_bytes < 1:
        raise ValueError(f"shard size must be positive, got {max_shard_bytes}")
    shards: list[range] = []
    first, payload = 0, 0
    for i, size in enumerate(sample_bytes):
        if i > first and closes_shard(payload, size, max_shard_bytes):
            shards.append(range(first, i))
            first, payload = i, 0
        payload += size
    if len(sample_bytes) > first:
        shards.append(range(first, len(sample_bytes)))
    return shards


@st.composite
def plans(draw):
    total = draw(st.integers(1, 5000))
    max_frames = draw(st.integers(1, 1200))
    overlap = draw(st.integers(0, max_frames - 1))
    return total, max_frames, overlap


@given(plans())
def test_chunk_plan_covers_with_exact_overlap(args):
    total, n, k = args
    chunks = chunk_plan(total, n, k)
    assert chunks[0][0] == 0 and chunks[-1][1] == total
    for start, end in chunks:
        assert 0 <= start < end <= total and end - start <= n
    for (s0, e0), (s1, e1) in zip(chunks, chunks[1:]):
        assert s1 == s0 + n - k  # starts step by N - K
        assert e0 - s1 == k  # neighbours share exactly K frames
        assert e0 < total  # a chunk is only started while the previous one is short of the end
    covered = set()
    for start, end in chunks:
        covered.update(range(start, end))
    assert covered == set(range(total))


@given(st.integers(1, 5000), st.integers(1, 1200))
def test_no_overlap_is_the_original_rule(total, n):
    chunks = chunk_plan(total, n, 0)
    assert len(chunks) == math.ceil(total / n)
    assert chunks == [(i * n, min((i + 1) * n, total)) for i in range(len(chunks))]


def test_chunk_plan_examples():
    assert chunk_plan(5000, 1000) == [(0, 1000), (1000, 2000), (2000, 3000), (3000, 4000), (4000, 5000)]
    assert chunk_plan(10, 4, 1) == [(0, 4), (3, 7), (6, 10)]
    assert chunk_plan(7, None) == [(0, 7)]
    assert chunk_plan(3, 10, 5) == [(0, 3)]


@pytest.mark.parametrize("args", [(0, 10, 0), (10, 0, 0), (10, 5, 5), (10, 5, -1)])
def test_chunk_plan_rejects_bad_arguments(args):
    with pytest.raises(ValueError):
        chunk_plan(*args)


@st.composite
def timelines(draw):
    total = draw(st.integers(1, 400))
    cuts = sorted(draw(st.sets(st.integers(0, total), min_size=2, max_size=20)))
    segments = []
    for a, b in zip(cuts, cuts[1:]):
        if draw(st.booleans()):  # leave some gaps
            segments.append(SourceSegment(start=a, end=b, label=draw(st.sampled_from("abc"))))
    return total, segments


@given(timelines(), st.integers(1, 200), st.integers(0, 50))
def test_clip_timeline_matches_per_frame_labels(args, n, k):
    total, segments = args
    k = min(k, n - 1)
    label_at = {f: (i, s.label) for i, s in enumerate(segments) for f in range(s.start, s.end)}
    for start, end in chunk_plan(total, n, k):
        clipped = clip_timeline(segments, start, end)
        seen = {}
        for c in clipped:
            assert 0 <= c.start < c.end <= end - start
            assert (c.global_start, c.global_end) == (c.start + start, c.end + start)
            src = segments[c.segment_id]
            assert c.label == src.label
            assert c.truncated_start == (src.start < start) and c.truncated_end == (src.end > end)
            for f in range(c.global_start, c.global_end):
                seen[f] = (c.segment_id, c.label)
        assert seen == {f: v for f, v in label_at.items() if start <= f < end}


def test_check_timeline_accepts_and_types():
    raw = [{"start": 0, "end": 5, "label": "front"}, {"start": 7, "end": 9, "label": "adjust"}]
    assert check_timeline(raw, 9) == [SourceSegment(start=0, end=5, label="front"), SourceSegment(start=7, end=9, label="adjust")]


@pytest.mark.parametrize(
    "raw, reason",
    [
        ([{"start": 0, "end": 11, "label": "a"}], "outside the video"),
        ([{"start": -1, "end": 3, "label": "a"}], "outside the video"),
        ([{"start": 4, "end": 4, "label": "a"}], "end 4 <= start 4"),
        ([{"start": 0, "end": 5, "label": "a"}, {"start": 4, "end": 8, "label": "b"}], "overlaps or precedes"),
        ([{"start": 5, "end": 8, "label": "a"}, {"start": 0, "end": 2, "label": "b"}], "overlaps or precedes"),
        ([{"start": 0, "end": 5, "label": 3}], "label must be a non-empty string"),
        ([{"start": "0", "end": 5, "label": "a"}], "start must be an integer"),
        ({"start": 0}, '"timeline" must be a list'),
    ],
)
def test_check_timeline_names_the_reason(raw, reason):
    with pytest.raises(ValueError, match=reason):
        check_timeline(raw, 10)


@given(st.lists(st.text("abcdef_", min_size=1, max_size=6), unique=True, max_size=60), st.integers(0, 2**32))
def test_interleave_is_a_permutation_of_the_set(keys, seed):
    order = interleave(keys, seed)
    assert sorted(order) == sorted(keys)
    assert interleave(list(reversed(keys)), seed) == order  # only the set matters


def test_interleave_mixes_videos_and_depends_on_seed():
    keys = [f"v{v}_{c:05d}" for v in range(4) for c in range(10)]
    a, b = interleave(keys, 0), interleave(keys, 1)
    assert a != b
    runs = sum(x.split("_")[0] == y.split("_")[0] for x, y in zip(a, a[1:]))
    assert runs < 20  # chunks of one video are not kept in a row


@given(st.lists(st.integers(1, 5000), max_size=80), st.integers(1, 40000))
def test_plan_shards_packs_in_order_within_limit(sizes, limit):
    shards = plan_shards(sizes, limit)
    assert [i for r in shards for i in r] == list(range(len(sizes)))
    for r in shards:
        assert len(r) >= 1
        if len(r) > 1:
            assert tar_file_bytes(sum(sizes[i] for i in r)) <= limit
    for r, nxt in zip(shards, shards[1:]):
        # greedy: the next shard's first sample did not fit
        assert tar_file_bytes(sum(sizes[i] for i in r) + sizes[nxt[0]]) > limit


def test_tar_arithmetic():
    assert tar_file_bytes(0) == 10240 and tar_file_bytes(9216) == 10240 and tar_file_bytes(9217) == 20480


@st.composite
def video_chunks(draw):
    ids = draw(st.lists(st.text("abcdef", min_size=1, max_size=5), unique=True, min_size=1, max_size=30))
    return {v: draw(st.integers(1, 12)) for v in ids}


@given(video_chunks(), st.integers(0, 2**32), st.integers(1, 8))
def test_sample_order_groups_videos_and_depends_only_on_values(chunks, seed, mix):
    order = sample_order(chunks, seed, mix)
    assert sorted(order) == sorted(f"{v}_{c:05d}" for v, n in chunks.items() for c in range(n))
    assert sample_order(dict(reversed(list(chunks.items()))), seed, mix) == order  # not the dict's order
    # Consecutive runs of `mix` videos own contiguous blocks of the order: a group's shards
    # need only that group's videos.
    videos = list(dict.fromkeys(k.rsplit("_", 1)[0] for k in order))
    groups = [set(videos[i : i + mix]) for i in range(0, len(videos), mix)]
    blocks, at = [], 0
    for group in groups:
        size = sum(chunks[v] for v in group)
        blocks.append({k.rsplit("_", 1)[0] for k in order[at : at + size]})
        at += size
    assert blocks == groups


def test_sample_order_mixes_within_a_group_and_follows_the_seed():
    chunks = {f"v{i}": 10 for i in range(8)}
    a, b = sample_order(chunks, 0, 4), sample_order(chunks, 1, 4)
    assert a != b
    first = {k.rsplit("_", 1)[0] for k in a[:40]}
    assert len(first) == 4  # the first group: four videos, interleaved
    assert sum(x.split("_")[0] == y.split("_")[0] for x, y in zip(a[:40], a[1:40])) < 20


@given(
    st.integers(1, 3000), st.integers(1, 200), st.integers(0, 60), st.integers(1, 900),
    st.lists(st.booleans(), min_size=0, max_size=400),
)
def test_runs_cover_the_chunks_to_do_once_in_order(total, max_frames, overlap, frames, done_flags):
    overlap = min(overlap, max_frames - 1)
    chunks = chunk_plan(total, max_frames, overlap)
    todo = [not (done_flags[c] if c < len(done_flags) else False) for c in range(len(chunks))]
    runs = cut_runs(chunks, frames, todo)
    covered = [c for first, stop in runs for c in range(first, stop)]
    assert covered == [c for c in range(len(chunks)) if todo[c]]  # every chunk to do once, in order
    assert all(first < stop and all(todo[first:stop]) for first, stop in runs)  # consecutive, never across a done one
    for first, stop in runs:  # about `frames` each: more frames than that only as one chunk, or split evenly
        span = chunks[stop - 1][1] - chunks[first][0]
        assert stop - first == 1 or span < 2 * frames + 2 * max_frames
    assert cut_runs(chunks, frames, todo) == runs


def test_run_examples():
    chunks = chunk_plan(3000, 100)  # 30 chunks
    assert cut_runs(chunks, 1) == [(c, c + 1) for c in range(30)]
    assert cut_runs(chunks, 10_000) == [(0, 30)]
    assert cut_runs(chunks, 750) == [(0, 7), (7, 15), (15, 22), (22, 30)]
    assert cut_runs(chunks, 750, [c not in (3, 4) for c in range(30)]) == [(0, 3), (5, 13), (13, 21), (21, 30)]
    # 2 tasks per worker, never under MIN_RUN_FRAMES; one worker: whole videos
    assert run_frames(3000, 2) == 750 and len(cut_runs(chunks, run_frames(3000, 2))) == 4
    assert run_frames(100, 8) == MIN_RUN_FRAMES
    assert run_frames(3000, 1) == 3000 and cut_runs(chunks, run_frames(3000, 1)) == [(0, 30)]


@given(st.lists(st.tuples(st.integers(-50, 500), st.booleans()), max_size=120, unique_by=lambda p: p[0]),
       st.integers(1, 20))
def test_entries_are_keyframes_at_their_presentation_rank(packets, gap):
    entries = entry_points(packets, gap=gap)
    order = sorted(p for p, _ in packets)
    assert entries.why_not is None
    frames = [f for f, _ in entries.points]
    assert frames == sorted(frames) and all(b - a >= gap for a, b in zip([0] + frames, frames))
    keys = {p for p, key in packets if key}
    assert all(pts in keys and order.index(pts) == f for f, pts in entries.points)
    for start in range(0, len(packets) + 2):
        tried = entries.before(start)
        assert all(f <= start for f, _ in tried) and [f for f, _ in tried] == sorted(frames_le := [f for f in frames if f <= start], reverse=True)[:SEEK_TRIES]
        assert frames_le[-SEEK_TRIES:] == [f for f, _ in entries.around(start, start + 5).points][:len(frames_le[-SEEK_TRIES:])]


def test_a_keyframe_that_is_no_clean_cut_is_no_entry():
    """MPEG-TS files joined with `cat`: timestamps jump back, so a keyframe's timestamp rank
    is not the frame index a decoder outputs it at; only clean cuts are entries."""
    a = [(2 * p, p % 12 == 0) for p in range(48)]  # pts 0, 2, ..., 94
    b = [(41 + 2 * p, p % 12 == 0) for p in range(48)]  # pts 41, 43, ..., 135: back below a's last
    c = [(1000 + p, p % 12 == 0) for p in range(48)]
    points = entry_points(a + b + c, gap=1).points
    # a's keyframe at pts 24 (nothing later is shown before it) and b's at 113 (nothing earlier
    # is shown after it) are clean cuts, at their decode positions 12 and 84; a's at 48, 72 and
    # b's at 41, 65, 89 are not (b's 41..47 follow a's 48; a's 94 precedes b's 89); c's all are.
    assert points == ((12, 24), (84, 113), (96, 1000), (108, 1012), (120, 1024), (132, 1036))


def test_entries_need_every_timestamp_once():
    assert entry_points([(0, True), (None, False), (20, True)]).why_not == "some packets have no timestamp"
    assert entry_points([(0, True), (3, False), (3, True)]).why_not == "two packets have the same timestamp"
    assert entry_points([(0, True)], untimed_stream=True).why_not == "a raw stream has no timestamps to seek to"
    # B-frames: decode order 0 3 1 2 | 6 4 5 ...; the keyframe at pts 12 is the 12th frame shown
    packets = [(0, True), (3, False), (1, False), (2, False)] + [(p, p == 12) for p in range(4, 40)]
    assert entry_points(packets, gap=8).points == ((12, 12),)
