"""Carrying an epoch's progress into a loader of another shape.

StatefulDataLoader restores a state only into a loader with the same num_workers, and each
rank's state only describes its own partitions. `merge_loader_states` joins every rank's
loader state into one global progress (the plan spec plus items delivered per partition),
which `VideoShardDataset(..., resume_from=progress)` accepts on any number of ranks and
workers: the rest of the epoch is split over the new world, each item delivered once.
"""

from __future__ import annotations

from typing import Any

STATE_KEY = "vidshard_resume"


def dataset_states(loader_state: Any) -> list[dict]:
    """Every VideoShardDataset state inside a (StatefulDataLoader) state dict."""
    if isinstance(loader_state, dict):
        if STATE_KEY in loader_state:
            return [loader_state]
        return [s for v in loader_state.values() for s in dataset_states(v)]
    if isinstance(loader_state, (list, tuple)):
        return [s for v in loader_state for s in dataset_states(v)]
    return []


def merge_loader_states(loader_states: list[Any]) -> dict[str, Any] | None:
    """One global progress from the loader states of ALL ranks (e.g. via all_gather_object).

    Returns None when no partition had started an epoch.
    """
    states = [s for ls in loader_states for s in dataset_states(ls) if s.get("spec")]
    if not states:
        return None
    spec = states[0]["spec"]
    if any(s["spec"] != spec for s in states):
        raise ValueError("loader states come from different epochs or settings; merge states saved at one step")
    ranks = {s["rank"] for s in states}
    if ranks != set(range(spec["world_size"])):
        raise ValueError(f"states of ranks {sorted(ranks)} given, the run had {spec['world_size']}: pass every rank's state")
    yielded = {}
    for s in states:
        yielded[s["rank"], s["worker"]] = max(yielded.get((s["rank"], s["worker"]), 0), int(s["yielded"]))
    return {"spec": spec, "yielded": [[r, w, k] for (r, w), k in sorted(yielded.items())]}
