"""One writer per OUTPUT: `OUTPUT/.vidshard-lock` names the writer that holds it (host, pid,
start time), so a second writer stops at once with a message naming the first.

Local folders: the lock is created with O_CREAT | O_EXCL, which one writer alone can win.
Object stores have no such primitive through fsspec: the lock is written only where none
exists, then read back after SETTLE_S; of writers that raced within that time, only the one
whose record is there proceeds (the others stop, naming it).

A lock whose writer died is stale. On the host that wrote it, a pid that no longer runs is
taken as dead: the lock is replaced, with a warning. From another host nothing can tell, so
the message says who holds it and which file to delete once that writer is known to be gone.
(A pid reused since by another process looks alive: the same message.)
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import socket
import time
import uuid

from .errors import WriterError
from .store import LocalStore

log = logging.getLogger("vidshard.write")
LOCK_NAME = ".vidshard-lock"
SETTLE_S = 1.0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: it runs
        return True
    return True


class OutputLock:
    """`with OutputLock(store, output):` holds OUTPUT for the block; WriterError if another writer does."""

    def __init__(self, store, output: str):
        self.store, self.output = store, output
        self.record = {"host": socket.gethostname(), "pid": os.getpid(), "token": uuid.uuid4().hex,
                       "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}

    def __enter__(self) -> OutputLock:
        for _ in range(2):  # a second try after a stale lock was removed
            if self._create():
                return self
            holder = self._holder()
            if holder is None:
                continue  # released between our try and our read
            if holder.get("host") == self.record["host"] and isinstance(holder.get("pid"), int) and not _alive(holder["pid"]):
                log.warning("%s: removing the lock of writer pid %s (started %s), which no longer runs on this host",
                            self.output, holder["pid"], holder.get("started"))
                self.store.delete(LOCK_NAME)
                continue
            raise WriterError(
                f"{self.output} is being written by another vidshard writer (host {holder.get('host')}, pid "
                f"{holder.get('pid')}, started {holder.get('started')}): wait for it to finish. If that writer is gone "
                f"(killed on another host), delete {self.store.url.rstrip('/')}/{LOCK_NAME} and run again")
        raise WriterError(f"{self.output}: could not take the writer's lock {LOCK_NAME} (it keeps changing hands)")

    def __exit__(self, *exc) -> None:
        holder = self._holder()
        if holder is not None and holder.get("token") == self.record["token"]:
            self.store.delete(LOCK_NAME)

    def _create(self) -> bool:
        data = json.dumps(self.record, sort_keys=True).encode()
        if isinstance(self.store, LocalStore):
            os.makedirs(self.store.root, exist_ok=True)
            try:
                fd = os.open(os.path.join(self.store.root, LOCK_NAME), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                return False
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            return True
        if self.store.exists(LOCK_NAME):
            return False
        self.store.write(LOCK_NAME, data)
        time.sleep(SETTLE_S)  # writers that raced past exists() have all written by now: the last one wins
        holder = self._holder()
        return holder is not None and holder.get("token") == self.record["token"]

    def _holder(self) -> dict | None:
        try:
            holder = json.loads(self.store.read(LOCK_NAME))
        except FileNotFoundError:
            return None
        except ValueError:  # being written this instant (local: created, not yet filled) or damaged
            time.sleep(0.1)
            try:
                holder = json.loads(self.store.read(LOCK_NAME))
            except (FileNotFoundError, ValueError):
                return {"host": "unknown", "pid": "unknown", "started": "unknown (an unreadable lock file)"}
        return holder if isinstance(holder, dict) else {"host": "unknown", "pid": "unknown", "started": "unknown"}
