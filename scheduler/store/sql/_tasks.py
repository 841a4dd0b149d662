"""The subtasks of parallel instances (`ParallelTaskStore`) on SQL."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from sx.processors import TaskStatus
from sx.scheduler.store._errors import NotFoundError
from sx.scheduler.store._records import NewTask, Page, Task, TaskStatusChange
from sx.scheduler.store._task_store import ParallelTaskStore
from sx.scheduler.store.sql import _tables as tables
from sx.scheduler.store.sql._dialect import is_foreign_key_violation
from sx.scheduler.store.sql._engine import SqlStoreBase
from sx.scheduler.store.sql._rows import check_page, task_from_row, utc_now

__all__ = ["SqlParallelTasks"]

_TASK_UNFINISHED = (int(TaskStatus.INIT), int(TaskStatus.PULLED), int(TaskStatus.RUNNING))
# Bounded IN lists for task ids (a parallel instance has at most a few hundred tasks anyway).
_TASK_CHUNK = 500


class SqlParallelTasks(SqlStoreBase, ParallelTaskStore):
    """`ParallelTaskStore` on SQL."""

    async def create_tasks(self, instance_id: int, tasks: Sequence[NewTask]) -> int:
        if not tasks:
            return 0
        rows = [
            {
                "instance_id": instance_id,
                "task_id": task.task_id,
                "name": task.name,
                "payload": task.payload,
                "parent_id": task.parent_id,
                "batch_seq": task.batch_seq,
                "status": int(TaskStatus.INIT),
                "worker_id": "",
                "worker_addr": "",
                "attempt": 0,
                "result": "",
            }
            for task in tasks
        ]
        statement = self._insert(tables.tasks).on_conflict_do_nothing(
            index_elements=["instance_id", "task_id"]
        )
        try:
            async with self._write() as conn:
                result = await conn.execute(statement, rows)
        except IntegrityError as exc:
            if is_foreign_key_violation(exc):
                raise NotFoundError(f"instance_id={instance_id!r}: no such instance") from None
            raise
        # executemany rowcounts differ by driver; -1 means "unknown", so count what is stored.
        if result.rowcount is not None and result.rowcount >= 0:
            return int(result.rowcount)
        return len(rows)

    async def update_task_statuses(self, instance_id: int, changes: Sequence[TaskStatusChange]) -> int:
        t = tables.tasks
        now = utc_now()
        changed = 0
        async with self._write() as conn:
            for change in changes:
                ids = list(change.task_ids)
                if change.results and len(change.results) != len(ids):
                    raise ValueError(
                        f"results: {len(change.results)} given for {len(ids)} task id(s); "
                        "give one per task id or none"
                    )
                base = [t.c.instance_id == instance_id, t.c.status.in_(_TASK_UNFINISHED)]
                status = change.status
                if status.finished:
                    values: dict[str, Any] = {"status": int(status), "end_time": now}
                    if change.worker_addr:
                        values["worker_addr"] = change.worker_addr
                        values["worker_id"] = change.worker_id
                    if change.results:
                        for task_id, text in zip(ids, change.results, strict=True):
                            result = await conn.execute(
                                sa.update(t)
                                .where(*base, t.c.task_id == task_id)
                                .values({**values, "result": text})
                            )
                            changed += result.rowcount
                        continue
                elif status is TaskStatus.PULLED:
                    values = {
                        "status": int(status),
                        "worker_id": change.worker_id,
                        "worker_addr": change.worker_addr,
                        "attempt": t.c.attempt + 1,
                    }
                elif status is TaskStatus.RUNNING:
                    values = {"status": int(status), "start_time": now}
                    if change.worker_addr:
                        values["worker_addr"] = change.worker_addr
                        values["worker_id"] = change.worker_id
                else:
                    values = {"status": int(status)}
                for start in range(0, len(ids), _TASK_CHUNK):
                    chunk = ids[start : start + _TASK_CHUNK]
                    result = await conn.execute(
                        sa.update(t).where(*base, t.c.task_id.in_(chunk)).values(values)
                    )
                    changed += result.rowcount
        return changed

    async def list_tasks(
        self,
        instance_id: int,
        *,
        statuses: Sequence[TaskStatus] | None = None,
        task_ids: Sequence[int] | None = None,
        offset: int = 0,
        limit: int = 100,
    ) -> Page[Task]:
        check_page(offset, limit)
        t = tables.tasks
        where: list[sa.ColumnElement[bool]] = [t.c.instance_id == instance_id]
        if statuses:
            where.append(t.c.status.in_([int(s) for s in statuses]))
        if task_ids is not None:
            where.append(t.c.task_id.in_(list(task_ids)))
        return await self._read_page(
            t, where, order_by=t.c.task_id, offset=offset, limit=limit, record=task_from_row
        )

    async def count_tasks(self, instance_id: int) -> dict[TaskStatus, int]:
        t = tables.tasks
        query = (
            sa.select(t.c.status, sa.func.count()).where(t.c.instance_id == instance_id).group_by(t.c.status)
        )
        async with self._read() as conn:
            return {TaskStatus(int(row[0])): int(row[1]) for row in await conn.execute(query)}

    async def reset_tasks(
        self, instance_id: int, task_ids: Sequence[int], *, only_if_status: Sequence[TaskStatus]
    ) -> list[int]:
        t = tables.tasks
        reset: list[int] = []
        values = {
            "status": int(TaskStatus.INIT),
            "result": "",
            "worker_id": "",
            "worker_addr": "",
            "start_time": None,
            "end_time": None,
        }
        ids = list(dict.fromkeys(task_ids))
        async with self._write() as conn:
            for start in range(0, len(ids), _TASK_CHUNK):
                chunk = ids[start : start + _TASK_CHUNK]
                statement = (
                    sa.update(t)
                    .where(
                        t.c.instance_id == instance_id,
                        t.c.task_id.in_(chunk),
                        t.c.status.in_([int(s) for s in only_if_status]),
                    )
                    .values(values)
                    .returning(t.c.task_id)
                )
                reset.extend(int(row[0]) for row in await conn.execute(statement))
        return sorted(reset)

    async def copy_tasks(self, from_instance_id: int, to_instance_id: int) -> int:
        t = tables.tasks
        success = int(TaskStatus.SUCCESS)
        keep = t.c.status == success
        columns = [
            "instance_id",
            "task_id",
            "name",
            "payload",
            "parent_id",
            "batch_seq",
            "status",
            "worker_id",
            "worker_addr",
            "attempt",
            "result",
            "start_time",
            "end_time",
        ]
        source = sa.select(
            sa.literal(to_instance_id, sa.BigInteger()),
            t.c.task_id,
            t.c.name,
            t.c.payload,
            t.c.parent_id,
            t.c.batch_seq,
            sa.case((keep, success), else_=int(TaskStatus.INIT)),
            sa.case((keep, t.c.worker_id), else_=""),
            sa.case((keep, t.c.worker_addr), else_=""),
            t.c.attempt,
            sa.case((keep, t.c.result), else_=""),
            sa.case((keep, t.c.start_time), else_=sa.null()),
            sa.case((keep, t.c.end_time), else_=sa.null()),
        ).where(t.c.instance_id == from_instance_id)
        has_any = sa.select(t.c.task_id).where(t.c.instance_id == to_instance_id).limit(1)
        try:
            async with self._write() as conn:
                if (await conn.execute(has_any)).first() is not None:
                    return 0
                result = await conn.execute(sa.insert(t).from_select(columns, source))
        except IntegrityError as exc:
            if is_foreign_key_violation(exc):
                raise NotFoundError(f"instance_id={to_instance_id!r}: no such instance") from None
            raise
        return int(result.rowcount)
