"""Mid-epoch resume through torchdata's StatefulDataLoader, in new processes: interrupted +
resumed deliveries equal one uninterrupted epoch, on the same or another world shape."""

from __future__ import annotations

import collections
import json
import os
import subprocess
import sys

import pytest

from streaming import VideoShardDataset
from streaming.plan import Progress
from streaming.resume import STATE_KEY, ResumeMismatch, merge_loader_states
from streaming.world import World


def child(args: dict, rank: int = 0, world: int = 1) -> dict:
    env = {**os.environ, "RANK": str(rank), "WORLD_SIZE": str(world)}
    out = subprocess.run([sys.executable, "-m", "tests.loader_child", json.dumps(args)], env=env,
                         capture_output=True, text=True, cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def real(items):
    return collections.Counter((k, s) for k, s, padded in items if not padded)


@pytest.mark.parametrize("sample", ["chunk", "segment"])
def test_same_shape_resume_continues_the_epoch(small_dataset, tmp_path, sample):
    base = {"source": small_dataset, "workers": 2, "batch": 2, "sample": sample, "epoch": 3}
    full = child(base)
    state = str(tmp_path / "state.json")
    first = child({**base, "steps": 2, "save": state})
    rest = child({**base, "load": state})
    assert first["batches"] == 2
    assert real(first["items"] + rest["items"]) == real(full["items"])
    assert max(real(first["items"] + rest["items"]).values()) == 1


def test_other_world_shape_resumes_from_merged_progress(small_dataset, tmp_path):
    base = {"source": small_dataset, "batch": 1, "sample": "segment", "epoch": 1}
    full = [child({**base, "workers": 2}, rank=r, world=2) for r in range(2)]
    assert full[0]["batches"] == full[1]["batches"] == full[0]["len"]  # equal ranks
    everything = real(full[0]["items"] + full[1]["items"])
    states, delivered = [], []
    for rank, steps in ((0, 3), (1, 5)):  # the job dies with the ranks at different steps
        path = str(tmp_path / f"rank{rank}.json")
        run = child({**base, "workers": 2, "steps": steps, "save": path}, rank=rank, world=2)
        delivered += run["items"]
        states.append(json.load(open(path)))
    progress = merge_loader_states(states)
    json.dump(progress, open(tmp_path / "progress.json", "w"))
    size = len(json.dumps(progress))
    assert size < 2000  # the planner's inputs and counters, not a list of keys
    resumed = [child({**base, "workers": 1, "resume_from": str(tmp_path / "progress.json")}, rank=r, world=3) for r in range(3)]
    assert len({r["batches"] for r in resumed}) == 1  # still equal ranks after the change of shape
    total = real(delivered + [i for r in resumed for i in r["items"]])
    assert total == everything and max(total.values()) == 1


@pytest.mark.filterwarnings("ignore:'set_vital' is deprecated")
def test_resume_with_skipped_items_continues_exactly(small_dataset, tmp_path):
    """A sample that fails under on_error="skip" is replaced by a repeat; a run interrupted
    anywhere (before, between or after the skip and its substitute) and resumed yields exactly
    the items, substitutes and order of the uninterrupted run, and its state keeps the skips."""
    import shutil
    import tarfile

    broken = str(tmp_path / "broken")
    shutil.copytree(small_dataset, broken)
    for name in sorted(os.listdir(broken)):
        if name.endswith(".tar"):
            path = os.path.join(broken, name)
            with tarfile.open(path) as tar:
                spans = [(m.offset_data, m.size) for m in tar if m.name.endswith(".front.kpt.npz")][:1]
            with open(path, "r+b") as f:  # the shard's first keypoint archive: same size, garbage
                for offset, size in spans:
                    f.seek(offset)
                    f.write(b"\xff" * size)
            break
    from tests.loader_child import main as run  # in this process: a fresh dataset and loader per run, state via JSON

    base = {"source": broken, "workers": 2, "batch": 2, "sample": "segment", "epoch": 1, "on_error": "skip"}
    full = run(base)
    assert full["skipped"] == {"keypoints": 5} and sum(p for _, _, p in full["items"]) == 5  # 5 segments, each replaced
    for steps in (1, 2, 4):
        state = str(tmp_path / f"state{steps}.json")
        first = run({**base, "steps": steps, "save": state})
        rest = run({**base, "load": state})
        assert first["items"] + rest["items"] == full["items"], steps  # same items, substitutes and order
        assert rest["skipped"] == full["skipped"]  # the skips are in the state: they survive the resume


PARTITION_AT_3 = {"yielded": 3, "owed": 0, "last_good": None, "skipped": {}}  # a partition's ledger (ledger.Ledger.to_state)


def fresh_progress(ds, yielded: int) -> dict:
    """A merged progress of a 1 x 1 run of `ds` that delivered `yielded` items."""
    return Progress(spec=ds.spec(World()), yielded={(0, 0): yielded}).to_json()


@pytest.mark.parametrize("change, names", [
    ({"seed": 1}, "seed=0"),
    ({"shuffle": False}, "shuffle=True"),
    ({"shuffle_buffer": "1MB"}, "shuffle_buffer"),
    ({"shuffle_block": "shard"}, "shuffle_block"),
    ({"drop_last": True}, "drop_last"),
    ({"sample": "segment"}, "another sample"),
    ({"videos": ["session_000"]}, "video filter"),
])
def test_resume_under_other_settings_is_refused_naming_the_setting(small_dataset, change, names):
    state = fresh_progress(VideoShardDataset(small_dataset, load_rgb=False, load_kpt=True), 4)
    VideoShardDataset(small_dataset, load_rgb=False, load_kpt=True, resume_from=state)  # the same settings: accepted
    with pytest.raises(ResumeMismatch, match=names):
        VideoShardDataset(small_dataset, **{"load_rgb": False, "load_kpt": True, **change}, resume_from=state)


def test_resume_over_another_manifest_or_clip_length_is_refused(small_dataset):
    state = fresh_progress(VideoShardDataset(small_dataset, load_rgb=False, load_kpt=True), 4)
    first_shard = os.path.join(small_dataset, json.load(open(os.path.join(small_dataset, "index.json")))["shardlist"][0]["url"])
    with pytest.raises(ResumeMismatch, match="another dataset"):
        VideoShardDataset(first_shard, load_rgb=False, load_kpt=True, resume_from=state)
    clip = fresh_progress(VideoShardDataset(small_dataset, sample="clip", num_frames=4, load_rgb=False, load_kpt=True), 2)
    with pytest.raises(ResumeMismatch, match="num_frames"):
        VideoShardDataset(small_dataset, sample="clip", num_frames=8, load_rgb=False, load_kpt=True, resume_from=clip)
    # the StatefulDataLoader path: one partition's own state, checked when the epoch starts
    ds = VideoShardDataset(small_dataset, load_rgb=False, load_kpt=True)
    ds.load_state_dict({STATE_KEY: 1, "spec": ds.spec(World()).to_json(), "rank": 0, "worker": 0, **PARTITION_AT_3})
    other = VideoShardDataset(small_dataset, load_rgb=False, load_kpt=True, seed=5)
    other.load_state_dict({STATE_KEY: 1, "spec": ds.spec(World()).to_json(), "rank": 0, "worker": 0, **PARTITION_AT_3})
    assert len(list(ds)) == 6
    with pytest.raises(ResumeMismatch, match="seed=0"):
        next(iter(other))


def test_merged_resume_near_the_end_leaves_workers_idle_and_ranks_equal(small_dataset, monkeypatch):
    ds = VideoShardDataset(small_dataset, load_rgb=False, load_kpt=True)
    everything = [i["meta"]["key"] for i in ds]
    first = everything[:6]  # the run dies with 3 of 9 items left
    state = fresh_progress(ds, 6)
    resumed = VideoShardDataset(small_dataset, load_rgb=False, load_kpt=True, resume_from=state)
    per_rank, rest = collections.Counter(), []
    for rank in range(2):
        for worker in range(3):  # 2 ranks x 3 workers = 6 partitions for 3 items
            world = World(rank=rank, world_size=2, worker=worker, num_workers=3)
            monkeypatch.setattr(World, "detect", classmethod(lambda cls, w=world: w))
            items = list(resumed)
            per_rank[rank] += len(items)
            rest += [(i["meta"]["key"], i["meta"]["padded"]) for i in items]
    assert per_rank == {0: len(resumed), 1: len(resumed)} and len(resumed) == 2  # ceil(3 / 2), equal
    assert sorted(first + [k for k, padded in rest if not padded]) == sorted(everything)


def test_a_resumed_epoch_is_planned_once_per_iteration(small_dataset, monkeypatch):
    """`__iter__` resolves the resumed plan's levels once (not once for its windows and again
    for its item count): at 64 x 8 three resumes deep each resolution costs about a second."""
    from streaming import plan as plan_module

    ds = VideoShardDataset(small_dataset, load_rgb=False, load_kpt=True)
    resumed = VideoShardDataset(small_dataset, load_rgb=False, load_kpt=True, resume_from=fresh_progress(ds, 4))
    calls = collections.Counter()
    original = plan_module.EpochPlan.remaining

    def counted(self, yielded):
        calls["remaining"] += 1
        return original(self, yielded)

    monkeypatch.setattr(plan_module.EpochPlan, "remaining", counted)
    assert sum(1 for _ in resumed) == 5  # (list() would ask len() first: one more plan)
    assert calls["remaining"] == 1


def test_the_same_items_under_another_spelling_of_the_video_filter_resume(small_dataset):
    """The fingerprint names the items, not how the filter was written: every video listed
    (or ids the dataset does not hold added) is the same run as no filter."""
    index = json.load(open(os.path.join(small_dataset, "index.json")))
    every = sorted({s["key"].rsplit("_", 1)[0] for sh in index["shardlist"] for s in sh["samples"]})
    state = fresh_progress(VideoShardDataset(small_dataset, load_rgb=False, load_kpt=True), 4)
    for videos in (every, every[::-1] + ["no_such_video"]):
        assert len(VideoShardDataset(small_dataset, load_rgb=False, load_kpt=True, videos=videos, resume_from=state)) == 5
    subset = fresh_progress(VideoShardDataset(small_dataset, load_rgb=False, load_kpt=True, videos=every[:1]), 1)
    VideoShardDataset(small_dataset, load_rgb=False, load_kpt=True, videos=every[:1] + ["no_such_video"], resume_from=subset)
    with pytest.raises(ResumeMismatch, match="video filter"):
        VideoShardDataset(small_dataset, load_rgb=False, load_kpt=True, videos=every[1:], resume_from=subset)


def test_a_state_without_a_fingerprint_is_refused_as_such(small_dataset):
    """A plan spec without the fingerprint of its dataset and settings (made by hand: every
    state a VideoShardDataset saves has one) is named for what it is, not as a mismatch."""
    state = fresh_progress(VideoShardDataset(small_dataset, load_rgb=False, load_kpt=True), 4)
    del state["spec"]["fingerprint"]
    with pytest.raises(ResumeMismatch, match="not one a VideoShardDataset saved"):
        VideoShardDataset(small_dataset, load_rgb=False, load_kpt=True, resume_from=state)
    shard_scheme = fresh_progress(VideoShardDataset(small_dataset, load_rgb=False, load_kpt=True, shuffle_block="shard"), 4)
    with pytest.raises(ResumeMismatch, match="shuffle_block='shard'"):
        VideoShardDataset(small_dataset, load_rgb=False, load_kpt=True, resume_from=shard_scheme)


def test_a_loader_state_of_an_earlier_epoch_is_not_checked_against_changed_settings(small_dataset):
    """A StatefulDataLoader state whose epoch is over is not resumed (the next epoch starts
    afresh), so settings changed since then are not a mismatch."""
    old = VideoShardDataset(small_dataset, load_rgb=False, load_kpt=True)
    state = {STATE_KEY: 1, "spec": old.spec(World()).to_json(), "rank": 0, "worker": 0, **PARTITION_AT_3}
    changed = VideoShardDataset(small_dataset, load_rgb=False, load_kpt=True, shuffle_buffer="1MB", seed=7)
    changed.load_state_dict(state)
    changed.set_epoch(1)
    assert sum(1 for _ in changed) == 9  # epoch 1, whole


@pytest.mark.filterwarnings("ignore:'set_vital' is deprecated")
def test_same_shape_resume_of_a_resumed_epoch_counts_that_epoch(small_dataset, tmp_path):
    """A run resumed on another shape (a merged progress) is interrupted and restarted on its
    own shape from its loader state: with `continued_progress(state)` as resume_from, len(ds)
    is the resumed epoch's length (what the interrupted run's len(ds) was), not a fresh
    epoch's, and the three runs together deliver the epoch once."""
    from streaming.resume import continued_progress
    from tests.loader_child import main as run

    base = {"source": small_dataset, "batch": 1, "sample": "segment", "epoch": 1}
    full = run({**base, "workers": 2})
    first = run({**base, "workers": 2, "steps": 3, "save": str(tmp_path / "a.json")})
    json.dump(merge_loader_states([json.load(open(tmp_path / "a.json"))]), open(tmp_path / "p1.json", "w"))
    second = run({**base, "workers": 1, "steps": 2, "resume_from": str(tmp_path / "p1.json"), "save": str(tmp_path / "b.json")})
    assert second["len"] < full["len"]  # a resumed epoch: what was left of it
    continued = continued_progress(json.load(open(tmp_path / "b.json")))
    assert continued == json.load(open(tmp_path / "p1.json"))
    json.dump(continued, open(tmp_path / "continued.json", "w"))
    third = run({**base, "workers": 1, "load": str(tmp_path / "b.json"), "resume_from": str(tmp_path / "continued.json")})
    assert third["len"] == second["len"] == len(second["items"]) + len(third["items"])
    assert real(first["items"] + second["items"] + third["items"]) == real(full["items"])
    fresh = run({**base, "workers": 2, "steps": 1, "save": str(tmp_path / "fresh.json")})
    assert fresh["batches"] == 1 and continued_progress(json.load(open(tmp_path / "fresh.json"))) is None
    # the training example does the same on its own shape, and merges on another
    from vidshard.train.trainer import loader_resume

    state = json.load(open(tmp_path / "b.json"))
    checkpoint = {"world": [1, 1], "loader_states": [state]}
    assert loader_resume(checkpoint, rank=0, world=1, num_workers=1) == (continued, state)
    assert loader_resume(checkpoint, rank=1, world=2, num_workers=1) == (merge_loader_states([state]), None)
