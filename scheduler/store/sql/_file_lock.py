"""One scheduler per SQLite file: an exclusive OS lock on ``<database>.lock``, held while it is open.

The lock is ``fcntl.flock`` on a file beside the database, so the kernel drops it when the holder ends,
however it ends: a SIGKILLed scheduler never blocks its restart, and no stale lock needs cleaning up.
The file names its holder (pid, host, start time) for the message a second scheduler is refused with;
after a crash it still does, but only the lock, not the file's text, says who holds the database.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
from datetime import datetime
from pathlib import Path
from typing import Any

from sx.scheduler.store._errors import InUseError

__all__ = ["FileLock"]

_HELD: set[int] = set()
"""The descriptors of the locks this process holds."""


def _drop_after_fork() -> None:
    # A forked child (a processor's multiprocessing pool, say) shares the parent's open lock file, and
    # flock lasts until every copy is closed: a child outliving a SIGKILLed scheduler would keep it.
    for fd in _HELD:
        with contextlib.suppress(OSError):
            os.close(fd)
    _HELD.clear()


os.register_at_fork(after_in_child=_drop_after_fork)


class FileLock:
    """The exclusive lock on ``database`` (a resolved path): ``acquire()`` raises `InUseError`, naming
    the holder, while another process, or another ``FileLock`` in this one, holds it."""

    def __init__(self, database: Path) -> None:
        self.database = database
        self.path = database.with_name(database.name + ".lock")
        self._fd: int | None = None

    def acquire(self) -> None:
        if self._fd is not None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Not inherited across exec (PEP 446), so a script job's process never holds it.
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise self._in_use(holder) from None
        except BaseException:
            os.close(fd)
            raise
        _HELD.add(fd)
        self._fd = fd
        started = datetime.now().astimezone().isoformat(timespec="seconds")
        holder = {"pid": os.getpid(), "host": socket.gethostname(), "started": started}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(holder).encode(), 0)

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None or fd not in _HELD:  # not held, or this is a forked child (see _drop_after_fork)
            return
        _HELD.discard(fd)
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)  # so the file does not name a scheduler that stopped
        os.close(fd)  # the last copy of the open file: the lock goes with it

    def _in_use(self, holder: dict[str, Any]) -> InUseError:
        pid = holder.get("pid")
        pid = pid if isinstance(pid, int) else None
        if pid is None:  # the holder is between taking the lock and writing its name
            who = "another scheduler"
        else:
            who = f"another scheduler (pid {pid} on {holder.get('host')}, started {holder.get('started')})"
        return InUseError(
            f"the SQLite database {self.database} is in use by {who}; a SQLite database serves one "
            "scheduler: stop that one, give this one another --data-dir, or share a PostgreSQL "
            "database (--database-url postgresql://...) between schedulers",
            database=self.database,
            pid=pid,
        )


def _read_holder(fd: int) -> dict[str, Any]:
    """What the holder wrote, or {} while it has not written yet."""
    try:
        holder = json.loads(os.pread(fd, 4096, 0) or b"{}")
    except (OSError, ValueError):
        return {}
    return holder if isinstance(holder, dict) else {}
