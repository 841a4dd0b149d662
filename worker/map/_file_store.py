"""The batch store: every task of a map instance a row of a SQLite file under the worker's ``data_dir``.

The file survives the master: a master started for the same instance id on the same disk
(``data_dir``) reopens it, keeps the finished tasks finished and queues the others again.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
from collections.abc import Iterable
from pathlib import Path

from sx.processors import ROOT_TASK_NAME, TaskStatus
from sx.worker.map._store import ROOT_TASK_ID, TaskRecord, TaskStore

__all__ = ["FileTaskStore", "held_task_files", "remove_task_file", "task_file_path"]

log = logging.getLogger("sx.worker")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS tasks (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    payload BLOB NOT NULL,
    status INTEGER NOT NULL,
    result TEXT
);
-- No index on status: pages are read by id from a cursor, and an index costs a write per change.
DROP INDEX IF EXISTS tasks_queued;
CREATE TABLE IF NOT EXISTS mapped (
    parent INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    taken INTEGER NOT NULL,
    PRIMARY KEY (parent, seq)
);
"""

_INIT = int(TaskStatus.INIT)
_PULLED = int(TaskStatus.PULLED)


_IDS_PER_STATEMENT = 500
"""Task ids bound in one UPDATE (SQLite allows 32,766 parameters; pages are far smaller)."""

_FILE_SUFFIXES = ("", "-wal", "-shm")
"""A task file is SQLite's database file plus its write-ahead log and shared-memory files."""


def task_file_path(data_dir: Path, instance_id: int) -> Path:
    """The batch task file of an instance under a worker's ``data_dir``."""
    return data_dir / "map" / f"instance-{instance_id}.sqlite"


def held_task_files(data_dir: Path) -> list[int]:
    """The instance ids whose batch task files are under ``data_dir`` (told to the scheduler at
    registration: a lost master's instance resumes where its file is)."""
    folder = data_dir / "map"
    if not folder.is_dir():
        return []
    found: list[int] = []
    for path in folder.glob("instance-*.sqlite"):
        number = path.name.removeprefix("instance-").removesuffix(".sqlite")
        if number.isascii() and number.isdigit():
            found.append(int(number))
    return sorted(found)


def remove_task_file(path: Path) -> None:
    """Remove a task file and SQLite's files beside it (missing ones are fine)."""
    for suffix in _FILE_SUFFIXES:
        with contextlib.suppress(FileNotFoundError):
            Path(f"{path}{suffix}").unlink()


class FileTaskStore(TaskStore):
    """The batch store: every task a row of a SQLite file, so memory stays flat up to 1,000,000 tasks.

    A row stays queued (INIT) on disk until its task finished: a page taken leaves the queue in memory
    only (``_taken_below``, ``_requeued``), which saves a write per task, and a reopened file queues
    every unfinished row again, as it must anyway. Files of earlier versions may hold PULLED or RUNNING
    rows: reopening queues them too. ``job_id`` is written into the file; a file of another job (a
    reused id) is started over.
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
        self._taken_below = ROOT_TASK_ID
        """Queued rows with a smaller id were taken already (ids are queued in ascending order)."""
        self._requeued: list[TaskRecord] = []
        """Taken tasks given back (their worker was lost): sent again before the rows still queued."""
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
        records: list[TaskRecord] = []
        if self._requeued:
            records = self._requeued[:limit]
            del self._requeued[:limit]
        if len(records) < limit and self.pending > len(records) + len(self._requeued):
            rows = self._db.execute(
                "SELECT id, name, payload FROM tasks WHERE status = 1 AND id >= ? ORDER BY id LIMIT ?",
                (self._taken_below, limit - len(records)),
            ).fetchall()
            if rows:
                self._taken_below = int(rows[-1][0]) + 1
                records.extend(TaskRecord(int(r[0]), str(r[1]), bytes(r[2])) for r in rows)
        self.pending -= len(records)
        return records

    def requeue(self, records: Iterable[TaskRecord]) -> None:
        # Their rows are still queued on disk (a task's row changes only when it finished).
        given_back = list(records)
        self._requeued.extend(given_back)
        self.pending += len(given_back)

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
            # One statement per status and chunk of ids: far cheaper than one per row.
            ids_by_status: dict[int, list[int]] = {}
            for task_id, finished, _ in done:
                ids_by_status.setdefault(int(finished), []).append(task_id)
            for code, ids in ids_by_status.items():
                for start in range(0, len(ids), _IDS_PER_STATEMENT):
                    chunk = ids[start : start + _IDS_PER_STATEMENT]
                    marks = ",".join("?" * len(chunk))
                    db.execute(f"UPDATE tasks SET status = ? WHERE id IN ({marks})", (code, *chunk))
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
            remove_task_file(self.path)
