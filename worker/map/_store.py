"""Where a map master keeps its subtasks: in memory (grid, parallel) or in a SQLite file (batch).

The master holds only the tasks in flight (sent to a worker, not finished) itself; the store holds the
queue of tasks waiting to be sent and what finished. Both stores remember how much of each map batch
(parent task id, batch number) they took: a full queue takes a batch in part and the mapper sends the
rest later, and a task that runs again after a failover or a resume and maps the same batches again
does not create its subtasks twice.

The batch store's file survives the master: a master started for the same instance id on the same
disk (``data_dir``) reopens it, keeps the finished tasks finished and queues the others again.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from sx.processors._enums import ROOT_TASK_NAME, TaskStatus

__all__ = ["FileTaskStore", "MemoryTaskStore", "TaskRecord", "TaskStore", "task_file_path"]

log = logging.getLogger("sx.worker")

ROOT_TASK_ID = 0


@dataclass(slots=True)
class TaskRecord:
    """One subtask as the master sends it."""

    task_id: int
    name: str
    payload: bytes


class TaskStore(ABC):
    """The queue and the finished tasks of one map instance.

    ``keep_results`` keeps every task's result and status for reduce; map-only jobs keep none.
    """

    def __init__(self, *, keep_results: bool) -> None:
        self.keep_results = keep_results
        self.pending = 0
        """Tasks waiting to be sent."""
        self.resumed = False
        """True when the store was reopened with the tasks of an earlier master."""

    @abstractmethod
    def add_root(self) -> None:
        """Queue the root task (id 0) unless it exists already (a resumed instance)."""

    @abstractmethod
    def taken(self, parent_id: int, seq: int) -> int:
        """How many payloads of the map batch (parent task id, batch number) the store holds."""

    @abstractmethod
    def add(self, name: str, payloads: list[bytes], *, parent_id: int, seq: int) -> None:
        """Queue the next payloads of a map batch (those from index ``taken(parent_id, seq)`` on)."""

    @abstractmethod
    def take(self, limit: int) -> list[TaskRecord]:
        """Up to ``limit`` queued tasks, oldest first, which leave the queue."""

    @abstractmethod
    def requeue(self, records: Iterable[TaskRecord]) -> None:
        """Tasks taken but not finished (their worker was lost) go back to the queue."""

    @abstractmethod
    def finish(self, done: list[tuple[int, TaskStatus, str]]) -> None:
        """Record finished tasks: (task id, SUCCESS or FAILED, result)."""

    @abstractmethod
    def results(self) -> tuple[dict[int, str], dict[int, TaskStatus]]:
        """Every finished task's result and status, for reduce (empty unless ``keep_results``)."""

    def restored_counts(self) -> dict[str, tuple[int, int, int]]:
        """Per task name (total, success, failed) of a resumed instance; empty for a new one."""
        return {}

    @abstractmethod
    def close(self, *, remove: bool) -> None:
        """Release the store; ``remove`` deletes what it kept (the instance is over)."""


class MemoryTaskStore(TaskStore):
    """The grid store: a queue of records and, for reduce, the results, all in the master's memory."""

    def __init__(self, *, keep_results: bool) -> None:
        super().__init__(keep_results=keep_results)
        self._queue: deque[TaskRecord] = deque()
        self._next_id = 1
        self._batches: dict[tuple[int, int], int] = {}
        self._results: dict[int, str] = {}
        self._statuses: dict[int, TaskStatus] = {}
        self._root_added = False

    def add_root(self) -> None:
        if not self._root_added:
            self._root_added = True
            self._queue.appendleft(TaskRecord(ROOT_TASK_ID, ROOT_TASK_NAME, b""))
            self.pending += 1

    def taken(self, parent_id: int, seq: int) -> int:
        return self._batches.get((parent_id, seq), 0)

    def add(self, name: str, payloads: list[bytes], *, parent_id: int, seq: int) -> None:
        key = (parent_id, seq)
        self._batches[key] = self._batches.get(key, 0) + len(payloads)
        first = self._next_id
        self._next_id += len(payloads)
        self._queue.extend(TaskRecord(first + i, name, p) for i, p in enumerate(payloads))
        self.pending += len(payloads)

    def take(self, limit: int) -> list[TaskRecord]:
        queue = self._queue
        count = min(limit, len(queue))
        taken = [queue.popleft() for _ in range(count)]
        self.pending -= count
        return taken

    def requeue(self, records: Iterable[TaskRecord]) -> None:
        items = list(records)
        self._queue.extendleft(reversed(items))
        self.pending += len(items)

    def finish(self, done: list[tuple[int, TaskStatus, str]]) -> None:
        if not self.keep_results:
            return
        for task_id, status, result in done:
            self._results[task_id] = result
            self._statuses[task_id] = status

    def results(self) -> tuple[dict[int, str], dict[int, TaskStatus]]:
        return self._results, self._statuses

    def close(self, *, remove: bool) -> None:
        self._queue.clear()
        self._batches.clear()
        self._results = {}
        self._statuses = {}
        self.pending = 0


_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS tasks (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    payload BLOB NOT NULL,
    status INTEGER NOT NULL,
    result TEXT
);
CREATE INDEX IF NOT EXISTS tasks_queued ON tasks (id) WHERE status = 1;
CREATE TABLE IF NOT EXISTS mapped (
    parent INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    taken INTEGER NOT NULL,
    PRIMARY KEY (parent, seq)
);
"""

_INIT = int(TaskStatus.INIT)
_PULLED = int(TaskStatus.PULLED)


def task_file_path(data_dir: Path, instance_id: int) -> Path:
    """The batch task file of an instance under a worker's ``data_dir``."""
    return data_dir / "map" / f"instance-{instance_id}.sqlite"


class FileTaskStore(TaskStore):
    """The batch store: every task a row of a SQLite file, so memory stays flat up to 1,000,000 tasks.

    Taking a page marks its rows PULLED; a reopened file turns PULLED rows back into queued ones.
    ``job_id`` is written into the file; a file of another job (a reused id) is started over.
    """

    def __init__(self, path: Path, *, job_id: int, keep_results: bool) -> None:
        super().__init__(keep_results=keep_results)
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        existed = path.exists()
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self._restored: dict[str, tuple[int, int, int]] = {}
        if existed and self._owner() == str(job_id):
            self._reopen()
        else:
            if existed:
                log.warning("task file %s belongs to another job: starting over", path)
                self._db.executescript("DELETE FROM tasks; DELETE FROM mapped; DELETE FROM meta;")
            self._db.execute("INSERT OR REPLACE INTO meta VALUES ('job_id', ?)", (str(job_id),))
        row = self._db.execute("SELECT COALESCE(MAX(id), 0) FROM tasks").fetchone()
        self._next_id = int(row[0]) + 1

    def _owner(self) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = 'job_id'").fetchone()
        return str(row[0]) if row else None

    def _reopen(self) -> None:
        db = self._db
        db.execute("UPDATE tasks SET status = ? WHERE status IN (?, ?)", (_INIT, _PULLED, 3))
        rows = db.execute(
            "SELECT name, COUNT(*), SUM(status = 4), SUM(status = 5) FROM tasks GROUP BY name"
        ).fetchall()
        self._restored = {str(r[0]): (int(r[1]), int(r[2] or 0), int(r[3] or 0)) for r in rows}
        (queued,) = db.execute("SELECT COUNT(*) FROM tasks WHERE status = ?", (_INIT,)).fetchone()
        self.pending = int(queued)
        self.resumed = bool(rows)

    def restored_counts(self) -> dict[str, tuple[int, int, int]]:
        return dict(self._restored)

    def add_root(self) -> None:
        cursor = self._db.execute(
            "INSERT OR IGNORE INTO tasks (id, name, payload, status) VALUES (?, ?, ?, ?)",
            (ROOT_TASK_ID, ROOT_TASK_NAME, b"", _INIT),
        )
        if cursor.rowcount:
            self.pending += 1

    def taken(self, parent_id: int, seq: int) -> int:
        row = self._db.execute(
            "SELECT taken FROM mapped WHERE parent = ? AND seq = ?", (parent_id, seq)
        ).fetchone()
        return int(row[0]) if row else 0

    def add(self, name: str, payloads: list[bytes], *, parent_id: int, seq: int) -> None:
        db = self._db
        db.execute("BEGIN")
        try:
            db.execute(
                "INSERT INTO mapped VALUES (?, ?, ?) "
                "ON CONFLICT (parent, seq) DO UPDATE SET taken = taken + excluded.taken",
                (parent_id, seq, len(payloads)),
            )
            first = self._next_id
            db.executemany(
                "INSERT INTO tasks (id, name, payload, status) VALUES (?, ?, ?, 1)",
                ((first + i, name, p) for i, p in enumerate(payloads)),
            )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        self._next_id += len(payloads)
        self.pending += len(payloads)

    def take(self, limit: int) -> list[TaskRecord]:
        if limit <= 0 or self.pending <= 0:
            return []
        db = self._db
        rows = db.execute(
            "SELECT id, name, payload FROM tasks WHERE status = 1 ORDER BY id LIMIT ?", (limit,)
        ).fetchall()
        if rows:
            db.execute("BEGIN")
            db.executemany("UPDATE tasks SET status = ? WHERE id = ?", ((_PULLED, r[0]) for r in rows))
            db.execute("COMMIT")
        self.pending -= len(rows)
        return [TaskRecord(int(r[0]), str(r[1]), bytes(r[2])) for r in rows]

    def requeue(self, records: Iterable[TaskRecord]) -> None:
        ids = [(r.task_id,) for r in records]
        if not ids:
            return
        db = self._db
        db.execute("BEGIN")
        db.executemany(f"UPDATE tasks SET status = {_INIT} WHERE id = ?", ids)
        db.execute("COMMIT")
        self.pending += len(ids)

    def finish(self, done: list[tuple[int, TaskStatus, str]]) -> None:
        if not done:
            return
        db = self._db
        db.execute("BEGIN")
        if self.keep_results:
            db.executemany(
                "UPDATE tasks SET status = ?, result = ? WHERE id = ?",
                ((int(s), r, i) for i, s, r in done),
            )
        else:
            db.executemany("UPDATE tasks SET status = ? WHERE id = ?", ((int(s), i) for i, s, _ in done))
        db.execute("COMMIT")

    def results(self) -> tuple[dict[int, str], dict[int, TaskStatus]]:
        if not self.keep_results:
            return {}, {}
        results: dict[int, str] = {}
        statuses: dict[int, TaskStatus] = {}
        for task_id, status, result in self._db.execute(
            "SELECT id, status, result FROM tasks WHERE status IN (4, 5)"
        ):
            results[int(task_id)] = result or ""
            statuses[int(task_id)] = TaskStatus(status)
        return results, statuses

    def close(self, *, remove: bool) -> None:
        with contextlib.suppress(sqlite3.Error):
            self._db.close()
        if remove:
            for suffix in ("", "-wal", "-shm"):
                with contextlib.suppress(FileNotFoundError):
                    Path(f"{self.path}{suffix}").unlink()
