"""Mid-epoch resume through torchdata's StatefulDataLoader, in new processes: interrupted +
resumed deliveries equal one uninterrupted epoch, on the same or another world shape."""

from __future__ import annotations

import collections
import json
import os
import subprocess
import sys

import pytest

from streaming.resume import merge_loader_states


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
