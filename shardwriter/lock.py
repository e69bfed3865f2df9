"""One writer per OUTPUT: `OUTPUT/.vidshard-lock` names the writer that holds it (host, pid,
start time), so a second writer stops at once with a message naming the first.

Local folders: the writer holds an exclusive `flock` on the lock file for the whole job; the
kernel releases it when the writer exits or dies, so a lock is never stale and no pid is
guessed at (a writer in another pid namespace with the same host name, or two writers both
finding a dead one's lock, cannot both proceed). After taking the flock the writer checks that
the name still refers to the file it locked (a finishing writer unlinks it), else tries again.

Object stores have no such primitive through fsspec: the lock is written only where none
exists, then read back after SETTLE_S; of writers that raced within that time, only the one
whose record is there proceeds. This is best effort: a write slower than SETTLE_S can let two
writers through. A lock whose writer was killed on this host (its pid no longer runs) is
replaced with a warning, so a killed job's re-run resumes; one from another host stays: the
message says who holds it and which file to delete once that writer is known to be gone.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
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
        self.fd = None
        if isinstance(self.store, LocalStore):
            return self._enter_local()
        for _ in range(2):  # a second try after a stale lock was removed, or one released meanwhile
            if self._create_remote():
                return self
            holder = self._holder()
            if holder is None:
                continue
            if holder.get("host") == self.record["host"] and isinstance(holder.get("pid"), int) and not _alive(holder["pid"]):
                # No flock on an object store: a writer killed on this host (a driver killed and
                # re-run) left it. Its pid is the only evidence, and the same host name in another
                # pid namespace defeats it: one writer per OUTPUT stays the user's part there.
                log.warning("%s: removing the lock of writer pid %s (started %s), which no longer runs on this host",
                            self.output, holder["pid"], holder.get("started"))
                self.store.delete(LOCK_NAME)
                continue
            raise self._held_by(holder, remote=True)
        raise WriterError(f"{self.output}: could not take the writer's lock {LOCK_NAME} (it keeps changing hands)")

    def _enter_local(self) -> OutputLock:
        os.makedirs(self.store.root, exist_ok=True)
        path = os.path.join(self.store.root, LOCK_NAME)
        for _ in range(10):
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise self._held_by(self._holder() or {}, remote=False) from None
            try:
                same = os.stat(path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if not same:  # its holder finished and unlinked the file we locked: lock the new one
                os.close(fd)
                continue
            os.ftruncate(fd, 0)
            os.write(fd, json.dumps(self.record, sort_keys=True).encode())
            self.fd = fd
            return self
        raise WriterError(f"{self.output}: could not take the writer's lock {LOCK_NAME} (it keeps changing hands)")

    def _held_by(self, holder: dict, remote: bool) -> WriterError:
        lock = f"{self.store.url.rstrip('/')}/{LOCK_NAME}"
        gone = f" If that writer is gone (killed), delete {lock} and run again" if remote else f" (it holds {lock})"
        return WriterError(f"{self.output} is being written by another vidshard writer (host {holder.get('host', 'unknown')}, "
                           f"pid {holder.get('pid', 'unknown')}, started {holder.get('started', 'unknown')}): wait for it to "
                           f"finish.{gone}")

    def __exit__(self, *exc) -> None:
        if self.fd is not None:  # unlinked while still locked, then released: a waiting writer re-checks the name
            with contextlib.suppress(FileNotFoundError):
                os.remove(os.path.join(self.store.root, LOCK_NAME))
            os.close(self.fd)
            self.fd = None
            return
        holder = self._holder()
        if holder is not None and holder.get("token") == self.record["token"]:
            self.store.delete(LOCK_NAME)

    def _create_remote(self) -> bool:
        if self.store.exists(LOCK_NAME):
            return False
        self.store.write(LOCK_NAME, json.dumps(self.record, sort_keys=True).encode())
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
