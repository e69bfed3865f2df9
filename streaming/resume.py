"""Carrying an epoch's progress into a loader of another shape, and refusing the wrong run.

StatefulDataLoader restores a state only into a loader with the same num_workers, and each
rank's state only describes its own partitions. `merge_loader_states` joins every rank's
loader state into one global progress (the plan spec plus items delivered per partition),
which `VideoShardDataset(..., resume_from=progress)` accepts on any number of ranks and
workers: the rest of the epoch is split over the new world, each item delivered once.

A state is the planner's inputs, so it only means something for the same catalog and
settings: `fingerprint` digests what built the catalog (sample mode, the clip settings,
the video filter, the manifest's shards and samples) and `check_same_run` compares a saved
spec with the dataset's own, naming the first setting that differs.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

from .errors import ResumeError
from .format import video_of
from .plan import PlanSpec

STATE_KEY = "vidshard_resume"

# Spec fields that decide the order -> the dataset option a user would have changed.
# shuffle_buffer before shuffle_block: the default block is derived from the buffer.
_ORDER_SETTINGS = {"seed": "seed", "shuffle": "shuffle", "buffer_bytes": "shuffle_buffer", "block_bytes": "shuffle_block",
                   "drop_last": "drop_last"}


class ResumeMismatch(ResumeError):
    """A resume state saved under other settings than the dataset loading it."""


def fingerprint(manifest: Any, *, sample: str, num_frames: int | None, stride: int,
                videos: Sequence[str] | None) -> dict[str, Any]:
    """What the catalog and the items were built from, besides the spec's own fields.

    num_frames and stride change the items only in clip mode (they set the span the seeded
    window start is drawn over); elsewhere they pick frames inside the same items.
    """
    digest = hashlib.sha256()
    for shard in manifest.shards:
        digest.update(f"{shard.sha256}\n".encode())
        digest.update("".join(f"{s.key}\t{s.size}\t{s.nsegments}\n" for s in shard.samples).encode())
    # The filter's effect, not its spelling: ids the dataset lacks select nothing, and every
    # video selected is no filter.
    present = set() if videos is None else {video_of(s.key) for shard in manifest.shards for s in shard.samples}
    chosen = None if videos is None or present <= set(videos) else sorted(present & set(videos))
    clip = sample == "clip"
    return {
        "sample": sample,
        "num_frames": num_frames if clip else None,
        "stride": stride if clip else None,
        "videos": None if chosen is None else hashlib.sha256(json.dumps(chosen).encode()).hexdigest()[:16],
        "manifest": digest.hexdigest()[:16],
    }


def _shown(field: str, value: Any) -> str:
    return "'shard'" if field == "block_bytes" and value is None else repr(value)


def check_same_run(saved: PlanSpec, current: PlanSpec) -> None:
    """Raise ResumeMismatch naming the first order-deciding setting that differs."""
    if saved.fingerprint is None:  # a plan spec made by hand (plan.PlanSpec's default): nothing to check it by
        raise ResumeMismatch("the resume state has no fingerprint of its dataset and settings (not one a "
                             "VideoShardDataset saved): it cannot be checked against this dataset, start the epoch afresh")
    for field, option in _ORDER_SETTINGS.items():
        if getattr(saved, field) != getattr(current, field):
            raise ResumeMismatch(f"the resume state was saved with {option}={_shown(field, getattr(saved, field))}, this "
                                 f"dataset has {option}={_shown(field, getattr(current, field))}: resume with the "
                                 "settings of the saved run")
    theirs, ours = saved.fingerprint, current.fingerprint or {}
    if theirs.get("manifest") != ours.get("manifest"):  # before the filter: another dataset selects other videos too
        raise ResumeMismatch("the resume state was saved over another dataset: its shards or samples (keys, sizes, "
                             "segments) differ from this index.json's")
    for key in ("sample", "num_frames", "stride", "videos"):
        if theirs.get(key) != ours.get(key):
            what = "video filter (videos=)" if key == "videos" else key
            raise ResumeMismatch(f"the resume state was saved with another {what} ({theirs.get(key)!r}, now "
                                 f"{ours.get(key)!r}): resume with the settings of the saved run")


def dataset_states(loader_state: Any) -> list[dict]:
    """Every VideoShardDataset state inside a (StatefulDataLoader) state dict."""
    if isinstance(loader_state, dict):
        if STATE_KEY in loader_state:
            return [loader_state]
        return [s for v in loader_state.values() for s in dataset_states(v)]
    if isinstance(loader_state, (list, tuple)):
        return [s for v in loader_state for s in dataset_states(v)]
    return []


def frame_counts(loader_state: Any) -> dict[str, int]:
    """Frames decoded and delivered (converted for items) by every worker of a
    StatefulDataLoader state, each since its process started: decoded / delivered is what
    decoding cost per delivered frame (the clips' GOP against the frames items take)."""
    states = dataset_states(loader_state)
    return {k: sum(int((s.get("frames") or {}).get(k, 0)) for s in states) for k in ("decoded", "delivered")}


def continued_progress(loader_state: Any) -> dict[str, Any] | None:
    """The `resume_from` to give a dataset beside its own loader state on the same shape: the
    merged progress that the state's epoch itself resumed (None for an epoch begun afresh).

    A worker's state restores its position in the running plan; the main process's dataset
    never sees it (StatefulDataLoader hands it to the workers), so without this `len(ds)`
    would count a fresh epoch instead of the resumed one the workers are continuing.
    """
    specs = [s["spec"] for s in dataset_states(loader_state) if s.get("spec")]
    return specs[0].get("base") if specs else None


def merge_loader_states(loader_states: list[Any]) -> dict[str, Any] | None:
    """One global progress from the loader states of ALL ranks (e.g. via all_gather_object).

    Returns None when no partition had started an epoch.
    """
    states = [s for ls in loader_states for s in dataset_states(ls) if s.get("spec")]
    if not states:
        return None
    spec = states[0]["spec"]
    if any(s["spec"] != spec for s in states):
        raise ResumeError("loader states come from different epochs or settings; merge states saved at one step")
    ranks = {s["rank"] for s in states}
    if ranks != set(range(spec["world_size"])):
        raise ResumeError(f"states of ranks {sorted(ranks)} given, the run had {spec['world_size']}: pass every rank's state")
    yielded = {}
    for s in states:
        yielded[s["rank"], s["worker"]] = max(yielded.get((s["rank"], s["worker"]), 0), int(s["yielded"]))
    return {"spec": spec, "yielded": [[r, w, k] for (r, w), k in sorted(yielded.items())]}
