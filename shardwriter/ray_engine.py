"""The writer's tasks on Ray (`vidshard write ... --engine ray`): the same task functions
as the local process pool, behind the same Engine interface (engine.py).

The code ships with the job: `runtime_env={"py_modules": [<streaming>, <shardwriter>]}` (Ray
zips the two packages once and every worker imports them from its own copy), so nodes
need Ray and the third-party dependencies, not this checkout at any path. Tasks read
SOURCE and read/write OUTPUT's store themselves; only task values (a VideoSpec, a list of
keys) and small records (sizes, hashes) travel through Ray. A task whose worker dies
(preemption, OOM kill, lost node) is retried by Ray (`max_retries`); an exception a task
raises is not retried: a source error goes to the --on-error policy.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import types
from collections.abc import Callable, Iterable
from typing import Any

log = logging.getLogger("vidshard.write")
CLOSE_WAIT_S = 300  # for cancelled tasks to stop (a task stops when its current call returns)


def _call(fn: Callable, task):
    """The Ray task: any picklable callable (a function, a partial) applied to one task."""
    return fn(task)


def _ping(_):
    return None


def code_paths(extra_modules: Iterable[types.ModuleType] = ()) -> list[str]:
    """The package folders a worker needs to run the writer's tasks (and any extra ones);
    found, not imported: of the reader, the tasks import `streaming.format` only."""
    found = [importlib.util.find_spec(name).submodule_search_locations[0] for name in ("streaming", "shardwriter")]
    return found + [os.path.dirname(m.__file__) for m in extra_modules]


def job_runtime_env(extra_modules: Iterable[types.ModuleType] = ()) -> dict[str, Any]:
    """The job's runtime_env: Ray zips these packages once and every worker imports them."""
    return {"py_modules": code_paths(extra_modules), "excludes": ["__pycache__"]}


def _submitted_with_code() -> bool:
    """A `ray job submit` driver whose job already ships code (--working-dir or py_modules):
    Ray merges ray.init's runtime_env into the job's and refuses the same field twice."""
    raw = os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR")
    if not raw:
        return False
    env = (json.loads(raw).get("runtime_env") or {})
    return bool(env.get("py_modules") or env.get("working_dir"))


class RayEngine:
    """Joins (or starts) Ray with the code shipped as the job's runtime_env. Ray accepts local
    folders for py_modules only at the job level, so a caller that initialises Ray itself
    passes `runtime_env=job_runtime_env()`; under `ray job submit`, the submitted job's
    runtime_env (`--working-dir` or `--runtime-env-json`) is the one used."""

    def __init__(
        self,
        address: str | None = None,
        num_cpus_per_task: float = 1,
        max_retries: int = 3,
        extra_modules: Iterable[types.ModuleType] = (),
    ):
        import ray

        self._ray = ray
        if not ray.is_initialized():
            ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False,
                     runtime_env=None if _submitted_with_code() else job_runtime_env(extra_modules))
        cpus = ray.cluster_resources().get("CPU", 1)
        self.parallelism = max(1, int(cpus // num_cpus_per_task))
        self._remote = ray.remote(_call).options(num_cpus=num_cpus_per_task, max_retries=max_retries,
                                                 retry_exceptions=False)
        self._pending: set = set()
        ray.get(self._remote.remote(_ping, None))  # up: the first call's lazy imports, the code shipped

    def submit(self, fn, task):
        ref = self._remote.remote(fn, task)
        self._pending.add(ref)
        return ref

    def wait(self, handles) -> list[tuple[Any, Any]]:
        ray = self._ray
        refs = list(handles)
        ready, _ = ray.wait(refs, num_returns=1)  # block for the first ...
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0)  # ... then take every finished one
        out = []
        for ref in ready:
            self._pending.discard(ref)
            try:
                out.append((ref, ray.get(ref)))
            except ray.exceptions.RayTaskError as exc:  # the task raised: hand over its own exception
                out.append((ref, exc.cause if exc.cause is not None else exc))
            except ray.exceptions.RayError as exc:  # retries exhausted (worker died each time), node lost
                out.append((ref, exc))
        return out

    def close(self) -> None:
        """Cancel what is still queued or running and wait until it has stopped: the driver
        may discard OUTPUT next (on_error fail), which a task still writing would undo. A
        running task takes the interrupt when its current call returns."""
        pending = list(self._pending)
        for ref in pending:
            self._ray.cancel(ref)
        if pending:
            _, left = self._ray.wait(pending, num_returns=len(pending), timeout=CLOSE_WAIT_S)
            if left:
                log.warning("%d cancelled task(s) still running after %d s", len(left), CLOSE_WAIT_S)
        self._pending.clear()


def ray_engine(address: str | None = None, num_cpus_per_task: float = 1, max_retries: int = 3,
               extra_modules: Iterable[types.ModuleType] = ()) -> Callable[[int], RayEngine]:
    """An engine factory for write_dataset (Ray is started or joined when the job starts)."""
    return lambda workers: RayEngine(address, num_cpus_per_task, max_retries, extra_modules)
