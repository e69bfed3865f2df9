"""The epoch planner, simulated for every rank and worker in one process (no files)."""

from __future__ import annotations

import collections

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from streaming.plan import Catalog, PlanSpec, Progress, epoch_order, items_per_rank, plan_items, worker_windows
from streaming.sampling import clip_window, frame_labels, uniform


@st.composite
def catalogs(draw):
    shards = draw(st.integers(1, 12))
    items = [np.array(draw(st.lists(st.integers(0, 4), min_size=1, max_size=9)), dtype=np.int64) for _ in range(shards)]
    sizes = [np.array([draw(st.integers(1, 50)) for _ in a], dtype=np.int64) for a in items]
    return Catalog(sample_items=items, sample_bytes=sizes)


def spec_for(ranks, workers, epoch=0, seed=0, drop_last=False, buffer=60, shuffle=True, base=None):
    return PlanSpec(epoch=epoch, seed=seed, shuffle=shuffle, drop_last=drop_last, buffer_bytes=buffer,
                    world_size=ranks, num_workers=workers, base=base)


def run_plan(catalog, spec):
    """(rank, worker) -> [(shard, sample, sub, padded)] in yield order."""
    order = epoch_order(catalog, spec.epoch, spec.seed, spec.shuffle)
    out = {}
    for r in range(spec.world_size):
        for w in range(spec.num_workers):
            out[r, w] = [(int(order.shard[p]), int(order.sample[p]), int(order.sub[p]), bool(pad))
                         for win in worker_windows(catalog, order, spec, r, w) for p, pad in zip(win.positions, win.padded)]
    return out


def simulate(catalog, ranks, workers, **kw):
    return run_plan(catalog, spec_for(ranks, workers, **kw))


def all_items(catalog):
    return {(s, i, k) for s, counts in enumerate(catalog.sample_items) for i, c in enumerate(counts) for k in range(c)}


@given(catalogs(), st.integers(1, 5), st.integers(1, 4), st.booleans(), st.integers(0, 3))
@settings(max_examples=150, deadline=None)
def test_every_item_once_and_equal_ranks(catalog, ranks, workers, drop_last, epoch):
    total = catalog.total_items
    got = simulate(catalog, ranks, workers, epoch=epoch, drop_last=drop_last)
    per_rank = collections.Counter()
    real = collections.Counter()
    for (r, _), items in got.items():
        per_rank[r] += len(items)
        real.update((s, i, k) for s, i, k, pad in items if not pad)
    n = items_per_rank(total, ranks, drop_last)
    assert all(per_rank[r] == n for r in range(ranks))  # equal on every rank
    assert all(c == 1 for c in real.values())  # nothing twice (padding aside)
    if drop_last:
        assert total - sum(real.values()) <= ranks - 1
    else:
        assert set(real) == all_items(catalog)  # everything
        assert sum(per_rank.values()) - total < ranks  # padding only to even out ranks
    sizes = [len(v) for (r, w), v in got.items() if r == 0]
    assert max(sizes) - min(sizes) <= 1  # workers balanced


@given(catalogs())
@settings(max_examples=50, deadline=None)
def test_same_seed_and_epoch_repeat_and_windows_fit(catalog):
    a = simulate(catalog, 2, 2, epoch=3, seed=5)
    assert a == simulate(catalog, 2, 2, epoch=3, seed=5)
    order = epoch_order(catalog, 0, 0, True)
    for win in worker_windows(catalog, order, spec_for(1, 1), 0, 0):
        pairs = win.samples(order)
        used = sum(int(catalog.sample_bytes[s][i]) for s, i in pairs)
        assert used <= 60 or len(pairs) == 1  # a window fits the buffer (or is one big sample)


def test_epochs_differ_and_unshuffled_is_file_order():
    catalog = Catalog(sample_items=[np.ones(10, np.int64)] * 6, sample_bytes=[np.full(10, 5, np.int64)] * 6)
    e0, e1 = simulate(catalog, 1, 1, epoch=0), simulate(catalog, 1, 1, epoch=1)
    assert e0 != e1 and sorted(e0[0, 0]) == sorted(e1[0, 0])
    plain = simulate(catalog, 1, 1, shuffle=False)[0, 0]
    assert plain == [(s, i, 0, False) for s in range(6) for i in range(10)]


def test_samplers():
    assert uniform(0, 10, None).tolist() == list(range(10))
    assert uniform(5, 15, 4).tolist() == [5, 8, 11, 14]
    assert len(uniform(2, 4, 5)) == 5 and set(uniform(2, 4, 5).tolist()) == {2, 3}  # repeats, stays inside
    rng = np.random.default_rng(0)
    for _ in range(50):
        w = clip_window(30, 5, 3, rng)
        assert w.tolist() == list(range(int(w[0]), int(w[0]) + 13, 3)) and w[-1] < 30
    assert clip_window(4, 3, 3, rng).tolist() == [0, 3, 3]  # longer than the chunk: repeat the last frame
    assert frame_labels(np.array([0, 3, 5, 9]), [(0, 4, 7), (5, 6, 2)]).tolist() == [7, 7, 2, -1]


@given(st.integers(1, 500), st.integers(1, 40))
def test_uniform_stays_inside(length, n):
    idx = uniform(0, length, n)
    assert len(idx) == n and idx.min() >= 0 and idx.max() < length and (np.diff(idx) >= 0).all()


@given(catalogs(), st.integers(1, 4), st.integers(1, 3), st.integers(1, 4), st.integers(1, 3), st.data())
@settings(max_examples=150, deadline=None)
def test_resume_on_any_world_shape_delivers_the_rest_once(catalog, r0, w0, r1, w1, data):
    """Stop each partition anywhere, resume on another shape: together, one epoch exactly."""
    first = spec_for(r0, w0, epoch=2, seed=9)
    before = run_plan(catalog, first)
    cut = {k: data.draw(st.integers(0, len(v))) for k, v in before.items()}
    delivered = [item for k, v in before.items() for item in v[: cut[k]]]
    progress = Progress(spec=first, yielded=cut)
    progress = Progress.from_json(progress.to_json())  # the state survives JSON
    resumed_spec = spec_for(r1, w1, epoch=2, seed=9, base=progress)
    after = run_plan(catalog, resumed_spec)
    per_rank = collections.Counter(r for (r, _), v in after.items() for _ in v)
    assert len(set(per_rank.values())) <= 1 and all(per_rank[r] == plan_items(catalog, resumed_spec) for r in range(r1))
    real = [i[:3] for i in delivered + [x for v in after.values() for x in v] if not i[3]]
    assert sorted(real) == sorted(all_items(catalog))  # everything, nothing twice


def test_resume_chain_and_same_shape():
    catalog = Catalog(sample_items=[np.array([1, 2, 0, 3]), np.array([2, 2])], sample_bytes=[np.full(4, 10), np.full(2, 10)])
    spec = spec_for(2, 2, epoch=1)
    plan = run_plan(catalog, spec)
    # same shape, nothing delivered yet: the resumed plan is the rest of the same sequence
    resumed = run_plan(catalog, spec_for(2, 2, epoch=1, base=Progress(spec=spec, yielded={})))
    assert sorted(x for v in resumed.values() for x in v if not x[3]) == sorted(x for v in plan.values() for x in v if not x[3])
    # interrupted twice, on three different shapes
    p1 = Progress(spec=spec, yielded={(0, 0): 1, (1, 1): 2})
    spec2 = spec_for(3, 1, epoch=1, base=p1)
    plan2 = run_plan(catalog, spec2)
    p2 = Progress(spec=spec2, yielded={(0, 0): 1, (2, 0): 1})
    plan3 = run_plan(catalog, spec_for(1, 2, epoch=1, base=p2))
    got = [x for (r, w), v in plan.items() for x in v[: p1.yielded.get((r, w), 0)]]
    got += [x for (r, w), v in plan2.items() for x in v[: p2.yielded.get((r, w), 0)]]
    got += [x for v in plan3.values() for x in v]
    assert sorted(x[:3] for x in got if not x[3]) == sorted(all_items(catalog))
