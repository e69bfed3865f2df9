"""The writer's per-video tasks on Ray (`vidshard write ... --engine ray`).

The same task function as the local process pool, scheduled as Ray tasks; scanning and
validation stay on the driver, and shard assembly and the manifest stay in the one
deterministic place after every task has finished (job.py), so the output is byte-identical
to the local engine's. Tasks carry a VideoSpec (paths, sizes, the timeline) and return a
small VideoResult; clips go to the spool under OUTPUT, which must therefore be a filesystem
every Ray node sees. A task whose worker dies is retried by Ray (`max_retries`); a source
error is not retried, it goes to the --on-error policy.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from .job import TASK_ENV, Engine


def _call(fn: Callable, task):
    """The Ray task: any picklable callable (a function, a partial) applied to one task."""
    return fn(task)


def ray_engine(address: str | None = None, num_cpus_per_task: float = 1, max_retries: int = 3) -> Engine:
    def run(fn: Callable, tasks: list):
        import ray

        if not ray.is_initialized():
            ray.init(address=address, include_dashboard=False, log_to_driver=False)
        # MALLOC_PERTURB_ must be in the worker's environment when it starts (see job.TASK_ENV);
        # PYTHONPATH lets workers import the task function the driver imports.
        env = {**TASK_ENV, "PYTHONPATH": os.pathsep.join(p for p in (os.getcwd(), os.environ.get("PYTHONPATH")) if p)}
        remote = ray.remote(_call).options(num_cpus=num_cpus_per_task, max_retries=max_retries, retry_exceptions=False,
                                           runtime_env={"env_vars": env})
        refs = {remote.remote(fn, task): task for task in tasks}
        pending = list(refs)
        try:
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                for ref in done:
                    try:
                        yield refs[ref], ray.get(ref)
                    except ray.exceptions.RayTaskError as exc:  # the task raised: hand over its own exception
                        yield refs[ref], exc.cause if exc.cause is not None else exc
        finally:
            for ref in pending:
                ray.cancel(ref)

    return run
