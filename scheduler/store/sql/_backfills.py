"""Backfills and their fire times (`BackfillStore`) on SQL."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from sx.processors import InstanceStatus
from sx.scheduler.store._backfills import (
    Backfill,
    BackfillFire,
    BackfillProgress,
    BackfillState,
    BackfillStore,
    FireState,
    NewBackfill,
)
from sx.scheduler.store._errors import NotFoundError
from sx.scheduler.store._records import (
    Instance,
    NewInstance,
    NewWorkflowInstance,
    Page,
    WorkflowInstance,
)
from sx.scheduler.store.sql import _tables as tables
from sx.scheduler.store.sql._engine import SqlStoreBase
from sx.scheduler.store.sql._rows import (
    check_aware,
    check_new_instance,
    check_page,
    created_instance,
    new_instance_values,
    utc_now,
    wf_instance_from_row,
)
from sx.scheduler.store.sql._tables import UtcDateTime

__all__ = ["SqlBackfills"]

_INSERT_CHUNK = 5000  # fire rows per INSERT: bounded statements for large plans
_T = TypeVar("_T")
_N = TypeVar("_N")


class _LostClaim(Exception):
    """A fire moved under us: roll the whole start back (cannot happen while the row lock holds)."""


def _progress(conn: Connection, backfill_ids: Sequence[int]) -> dict[int, BackfillProgress]:
    f = tables.backfill_fires
    counts: dict[int, dict[str, int]] = {i: {} for i in backfill_ids}
    if backfill_ids:
        query = (
            sa.select(f.c.backfill_id, f.c.state, sa.func.count())
            .where(f.c.backfill_id.in_(list(backfill_ids)))
            .group_by(f.c.backfill_id, f.c.state)
        )
        for backfill_id, state, count in conn.execute(query):
            counts[int(backfill_id)][str(state)] = int(count)
    return {i: BackfillProgress(**c) for i, c in counts.items()}


def _backfill(row: sa.Row[Any], progress: BackfillProgress) -> Backfill:
    return Backfill(
        id=row.id,
        job_id=row.job_id,
        workflow_id=row.workflow_id,
        namespace=row.namespace,
        group_id=row.group_id,
        start_time=row.start_time,
        end_time=row.end_time,
        concurrency=row.concurrency,
        skip_successful=bool(row.skip_successful),
        instance_parameters=row.instance_parameters,
        state=BackfillState(row.state),
        created_at=row.created_at,
        updated_at=row.updated_at,
        progress=progress,
    )


def _with_progress(conn: Connection, rows: Sequence[sa.Row[Any]]) -> list[Backfill]:
    progress = _progress(conn, [row.id for row in rows])
    return [_backfill(row, progress[row.id]) for row in rows]


def _insert_instance(conn: Connection, new: NewInstance, now: datetime) -> tuple[int, Instance]:
    check_new_instance(new)
    i = tables.instances
    instance_id = conn.execute(
        sa.insert(i).values(new_instance_values(new, now)).returning(i.c.id)
    ).scalar_one()
    return instance_id, created_instance(instance_id, new, now)


def _insert_wf_instance(
    conn: Connection, new: NewWorkflowInstance, now: datetime
) -> tuple[int, WorkflowInstance]:
    check_aware("schedule_time", new.schedule_time)
    w = tables.wf_instances
    values = {
        "workflow_id": new.workflow_id,
        "namespace": new.namespace,
        "group_id": new.group_id,
        "status": int(new.status),
        "trigger_type": int(new.trigger_type),
        "schedule_time": new.schedule_time,
        "graph": json.dumps({"nodes": list(new.nodes), "edges": [list(e) for e in new.edges]}),
        "instance_parameters": new.instance_parameters,
        "created_at": now,
        "end_time": None,
        "result": "",
    }
    row = conn.execute(sa.insert(w).values(values).returning(*w.c)).one()
    return row.id, wf_instance_from_row(row)


def _start_fires(
    conn: Connection,
    backfill_id: int,
    make: Callable[[datetime], _N],
    insert: Callable[[Connection, _N, datetime], tuple[int, _T]],
    now: datetime,
) -> list[_T]:
    b, f = tables.backfills, tables.backfill_fires
    # Taking the backfill's row first serializes starters across replicas (PostgreSQL row lock; SQLite
    # writes are serial anyway), so the RUNNING count below cannot be raced past the concurrency.
    locked = conn.execute(
        sa.update(b)
        .where(b.c.id == backfill_id, b.c.state == BackfillState.RUNNING.value)
        .values(updated_at=now)
        .returning(b.c.concurrency)
    ).one_or_none()
    if locked is None:
        return []
    running = conn.execute(
        sa.select(sa.func.count())
        .select_from(f)
        .where(f.c.backfill_id == backfill_id, f.c.state == FireState.RUNNING.value)
    ).scalar_one()
    room = int(locked.concurrency) - int(running)
    if room <= 0:
        return []
    times = conn.execute(
        sa.select(f.c.schedule_time)
        .where(f.c.backfill_id == backfill_id, f.c.state == FireState.PENDING.value)
        .order_by(f.c.schedule_time)
        .limit(room)
    ).scalars()
    created: list[_T] = []
    for schedule_time in list(times):
        instance_id, instance = insert(conn, make(schedule_time), now)
        claimed = conn.execute(
            sa.update(f)
            .where(
                f.c.backfill_id == backfill_id,
                f.c.schedule_time == sa.literal(schedule_time, UtcDateTime()),
                f.c.state == FireState.PENDING.value,
            )
            .values(state=FireState.RUNNING.value, instance_id=instance_id)
        )
        if claimed.rowcount != 1:
            raise _LostClaim
        created.append(instance)
    return created


class SqlBackfills(SqlStoreBase, BackfillStore):
    """`BackfillStore` on SQL."""

    async def create_backfill(self, new: NewBackfill) -> Backfill:
        check_aware("start_time", new.start_time)
        check_aware("end_time", new.end_time)
        for when in new.fire_times:
            check_aware("fire_times", when)
        now = utc_now()
        b, f = tables.backfills, tables.backfill_fires
        values = {
            "job_id": new.job_id,
            "workflow_id": new.workflow_id,
            "namespace": new.namespace,
            "group_id": new.group_id,
            "start_time": new.start_time,
            "end_time": new.end_time,
            "concurrency": new.concurrency,
            "skip_successful": new.skip_successful,
            "instance_parameters": new.instance_parameters,
            "state": BackfillState.RUNNING.value,
            "created_at": now,
            "updated_at": now,
        }
        skipped = new.skipped

        def work(conn: Connection) -> Backfill:
            if new.workflow_id is not None:
                w = tables.workflows
                if conn.execute(sa.select(w.c.id).where(w.c.id == new.workflow_id)).first() is None:
                    raise NotFoundError(f"workflow_id={new.workflow_id!r}: no such workflow")
            else:
                job = tables.jobs
                if conn.execute(sa.select(job.c.id).where(job.c.id == new.job_id)).first() is None:
                    raise NotFoundError(f"job_id={new.job_id!r}: no such job")
            row = conn.execute(sa.insert(b).values(values).returning(*b.c)).one()
            fires = [
                {
                    "backfill_id": row.id,
                    "schedule_time": when,
                    "state": (FireState.SKIPPED if when in skipped else FireState.PENDING).value,
                    "instance_id": None,
                }
                for when in new.fire_times
            ]
            for start in range(0, len(fires), _INSERT_CHUNK):
                conn.execute(sa.insert(f), fires[start : start + _INSERT_CHUNK])
            return _with_progress(conn, [row])[0]

        return await self._write_sync(work)

    async def get_backfill(self, backfill_id: int) -> Backfill | None:
        b = tables.backfills
        async with self._read() as conn:
            row = (await conn.execute(sa.select(b).where(b.c.id == backfill_id))).one_or_none()
            if row is None:
                return None
            return (await conn.run_sync(_with_progress, [row]))[0]

    async def list_backfills(
        self,
        namespace: str,
        group_id: str,
        *,
        job_id: int | None = None,
        offset: int = 0,
        limit: int = 20,
    ) -> Page[Backfill]:
        check_page(offset, limit)
        b = tables.backfills
        where: list[sa.ColumnElement[bool]] = [b.c.namespace == namespace, b.c.group_id == group_id]
        if job_id is not None:
            where.append(b.c.job_id == job_id)
        async with self._read() as conn:
            total = (await conn.execute(sa.select(sa.func.count()).select_from(b).where(*where))).scalar_one()
            query = sa.select(b).where(*where).order_by(b.c.id.desc()).offset(offset).limit(limit)
            rows = (await conn.execute(query)).all()
            items = await conn.run_sync(_with_progress, rows)
        return Page(items=items, total=int(total))

    async def running_backfill_ids(self, *, limit: int = 1000) -> list[int]:
        check_page(0, limit)
        b = tables.backfills
        running = b.c.state == BackfillState.RUNNING.value
        query = sa.select(b.c.id).where(running).order_by(b.c.id).limit(limit)
        async with self._read() as conn:
            return [int(i) for i in (await conn.execute(query)).scalars()]

    async def set_backfill_state(
        self, backfill_id: int, state: BackfillState, *, only_if: BackfillState
    ) -> Backfill | None:
        b = tables.backfills

        def work(conn: Connection) -> Backfill | None:
            row = conn.execute(
                sa.update(b)
                .where(b.c.id == backfill_id, b.c.state == only_if.value)
                .values(state=state.value, updated_at=utc_now())
                .returning(*b.c)
            ).one_or_none()
            return None if row is None else _with_progress(conn, [row])[0]

        return await self._write_sync(work)

    async def list_backfill_fires(
        self,
        backfill_id: int,
        *,
        states: Sequence[FireState] | None = None,
        offset: int = 0,
        limit: int = 100,
    ) -> Page[BackfillFire]:
        check_page(offset, limit)
        f = tables.backfill_fires
        where: list[sa.ColumnElement[bool]] = [f.c.backfill_id == backfill_id]
        if states is not None:
            where.append(f.c.state.in_([s.value for s in states]))
        return await self._read_page(
            f,
            where,
            order_by=f.c.schedule_time,
            offset=offset,
            limit=limit,
            record=lambda row: BackfillFire(
                backfill_id=row.backfill_id,
                schedule_time=row.schedule_time,
                state=FireState(row.state),
                instance_id=row.instance_id,
            ),
        )

    async def start_backfill_fires(
        self, backfill_id: int, make: Callable[[datetime], NewInstance], now: datetime
    ) -> list[Instance]:
        check_aware("now", now)
        try:
            return await self._write_sync(
                lambda conn: _start_fires(conn, backfill_id, make, _insert_instance, now)
            )
        except _LostClaim:
            return []

    async def start_workflow_backfill_fires(
        self, backfill_id: int, make: Callable[[datetime], NewWorkflowInstance], now: datetime
    ) -> list[WorkflowInstance]:
        check_aware("now", now)
        try:
            return await self._write_sync(
                lambda conn: _start_fires(conn, backfill_id, make, _insert_wf_instance, now)
            )
        except _LostClaim:
            return []

    async def settle_backfill_fire(
        self,
        backfill_id: int,
        schedule_time: datetime,
        *,
        only_if_instance: int,
        state: FireState,
        instance_id: int | None = None,
    ) -> bool:
        f = tables.backfill_fires
        values: dict[str, Any] = {"state": state.value}
        if instance_id is not None:
            values["instance_id"] = instance_id
        update = (
            sa.update(f)
            .where(
                f.c.backfill_id == backfill_id,
                f.c.schedule_time == sa.literal(schedule_time, UtcDateTime()),
                f.c.state == FireState.RUNNING.value,
                f.c.instance_id == only_if_instance,
            )
            .values(values)
        )
        result = await self._write_sync(lambda conn: conn.execute(update))
        return bool(result.rowcount == 1)

    async def successful_data_times(self, job_id: int, start: datetime, end: datetime) -> set[datetime]:
        check_aware("start", start)
        check_aware("end", end)
        i = tables.instances
        query = sa.select(i.c.data_time).where(
            i.c.job_id == job_id,
            i.c.status == int(InstanceStatus.SUCCESS),
            i.c.data_time >= sa.literal(start, UtcDateTime()),
            i.c.data_time <= sa.literal(end, UtcDateTime()),
        )
        async with self._read() as conn:
            return set((await conn.execute(query)).scalars())

    async def successful_workflow_times(
        self, workflow_id: int, start: datetime, end: datetime
    ) -> set[datetime]:
        check_aware("start", start)
        check_aware("end", end)
        w = tables.wf_instances
        query = sa.select(w.c.schedule_time).where(
            w.c.workflow_id == workflow_id,
            w.c.status == int(InstanceStatus.SUCCESS),
            w.c.schedule_time >= sa.literal(start, UtcDateTime()),
            w.c.schedule_time <= sa.literal(end, UtcDateTime()),
        )
        async with self._read() as conn:
            return set((await conn.execute(query)).scalars())
