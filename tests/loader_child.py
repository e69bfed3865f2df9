"""Runs a StatefulDataLoader in a fresh process, as a restarted training job would.

    python -m tests.loader_child '{"source": ..., "workers": 2, "batch": 2, "steps": 3,
                                   "load": state.json | null, "resume_from": progress.json | null,
                                   "save": state.json | null, "sample": "chunk"}'

Prints one JSON line: the items delivered ([key, segment_id, padded]) and batches run.
RANK / WORLD_SIZE come from the environment, as under torchrun.
"""

from __future__ import annotations

import json
import sys

from torchdata.stateful_dataloader import StatefulDataLoader

from streaming import VideoShardDataset, collate
from streaming.resume import dataset_states


def main(args: dict) -> dict:
    if args.get("dist"):
        import torch.distributed as dist

        dist.init_process_group("gloo")  # World.detect() then reads rank/world from torch.distributed
    resume_from = json.load(open(args["resume_from"])) if args.get("resume_from") else None
    ds = VideoShardDataset(args["source"], sample=args.get("sample", "chunk"), load_rgb=False, load_kpt=True,
                           resume_from=resume_from, shuffle_buffer="40KB", num_frames=args.get("num_frames"),
                           on_error=args.get("on_error", "raise"))
    ds.set_epoch(args.get("epoch", 0))
    loader = StatefulDataLoader(ds, batch_size=args["batch"], num_workers=args["workers"], collate_fn=collate)
    if args.get("load"):
        loader.load_state_dict(json.load(open(args["load"])))
    items, batches = [], 0
    for batch in loader:
        items += [[m["key"], m.get("segment_id"), m["padded"]] for m in batch["meta"]]
        batches += 1
        if args.get("steps") is not None and batches == args["steps"]:
            break
    state = loader.state_dict()
    if args.get("save"):
        with open(args["save"], "w") as f:
            json.dump(state, f)
    skipped: dict[str, int] = {}
    for s in dataset_states(state):
        for reason, n in (s.get("skipped") or {}).items():
            skipped[reason] = skipped.get(reason, 0) + n
    return {"items": items, "batches": batches, "len": len(ds), "skipped": skipped}


if __name__ == "__main__":
    args = json.loads(sys.argv[1])
    result = json.dumps(main(args))
    if args.get("out"):  # under torchrun: one file per rank
        import os

        with open(args["out"].format(rank=os.environ.get("RANK", 0)), "w") as f:
            f.write(result)
    else:
        print(result)
