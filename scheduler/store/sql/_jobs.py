"""Jobs and their fires (`JobStore`) on SQL.

A fire is claimed by a compare-and-set on the job's ``next_fire_time`` (from ``due`` to the next one)
in the transaction that creates its instance, so among replicas sharing a PostgreSQL store exactly one
claims it (PostgreSQL row-locks the jobs in id order first, so overlapping claims cannot deadlock).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from sx.processors import ExecuteMode, JobSpec, TimeType
from sx.scheduler.store._errors import DuplicateError, NotFoundError, StoreError
from sx.scheduler.store._job_store import JobStore
from sx.scheduler.store._records import Fire, Instance, Job, NewInstance, Page
from sx.scheduler.store.sql import _tables as tables
from sx.scheduler.store.sql._dialect import sqlstate
from sx.scheduler.store.sql._engine import SqlStoreBase
from sx.scheduler.store.sql._rows import (
    check_aware,
    check_new_instance,
    check_page,
    created_instance,
    dump_spec,
    job_from_row,
    new_instance_values,
    utc_now,
)
from sx.scheduler.store.sql._tables import JOB_CAN_FIRE, UtcDateTime

__all__ = ["SqlJobs"]

log = logging.getLogger("sx.scheduler.store")

_ID_CHUNK: Final = 5000  # ids per IN (...): well under both backends' parameter limits
_CLAIM_ATTEMPTS: Final = 3
_JOBS_KEPT: Final = 10_000  # jobs read by id kept in memory at most (then they start over)
_RETRYABLE_SQLSTATES: Final = frozenset({"40001", "40P01"})  # serialization failure, deadlock

# -- hot statements, built once ----------------------------------------------------------------------
# Building a statement per call costs more than running it: a new statement object has to be walked
# again for its compiled-cache key. These are built once and bound per call.
_t_jobs = tables.jobs
_GET_JOB: Final = sa.select(_t_jobs).where(_t_jobs.c.id == sa.bindparam("b_id"))
_FIND_JOB: Final = sa.select(_t_jobs).where(
    _t_jobs.c.namespace == sa.bindparam("b_namespace"),
    _t_jobs.c.group_id == sa.bindparam("b_group"),
    _t_jobs.c.name == sa.bindparam("b_name"),
)
_INSERT_JOB: Final = sa.insert(_t_jobs).returning(_t_jobs.c.id)


class SqlJobs(SqlStoreBase, JobStore):
    """`JobStore` on SQL: jobs, the due ones, and claiming their fires.

    A store that alone writes its database keeps the jobs it read by id (every ExecuteJob and every
    instance's end reads its job); each of its writes to jobs drops them, before and after.
    """

    _read_jobs: dict[int, Job] | None = None
    _jobs_generation: int = 0

    async def create_job(
        self,
        *,
        namespace: str,
        group_id: str,
        spec: JobSpec,
        enabled: bool,
        managed: bool,
        next_fire_time: datetime | None,
        namespace_source: str | None = None,
    ) -> Job:
        check_aware("next_fire_time", next_fire_time)
        now = utc_now()
        spec_text, time_type = dump_spec(spec)
        values = {
            "namespace": namespace,
            "namespace_source": namespace_source,
            "group_id": group_id,
            "name": spec.name,
            "spec": spec_text,
            "time_type": time_type,
            "enabled": enabled,
            "managed": managed,
            "next_fire_time": next_fire_time,
            "created_at": now,
            "updated_at": now,
        }
        try:
            job_id: int = await self._write_sync(lambda conn: conn.execute(_INSERT_JOB, values).scalar_one())
        except IntegrityError:
            raise DuplicateError(
                f"group {group_id!r} in namespace {namespace!r} already has a job named {spec.name!r}"
            ) from None
        return Job(
            id=job_id,
            namespace=namespace,
            group_id=group_id,
            spec=spec,
            enabled=enabled,
            managed=managed,
            next_fire_time=None if next_fire_time is None else next_fire_time.astimezone(UTC),
            namespace_source=namespace_source,
            created_at=now,
            updated_at=now,
        )

    async def get_job(self, job_id: int) -> Job | None:
        kept = self._read_jobs
        if kept is not None and (job := kept.get(job_id)) is not None:
            return job
        generation = self._jobs_generation
        row = await self._fetch_one(_GET_JOB, {"b_id": job_id})
        if row is None:
            return None
        job = job_from_row(row)
        if self._sole_writer and generation == self._jobs_generation:  # no write to jobs meanwhile
            if kept is None or len(kept) >= _JOBS_KEPT:
                self._read_jobs = kept = {}
            kept[job_id] = job
        return job

    def _jobs_changed(self) -> None:
        """Drop the jobs kept from reads: called before and after each write to jobs."""
        self._jobs_generation += 1
        self._read_jobs = None

    async def find_job(self, namespace: str, group_id: str, name: str) -> Job | None:
        params = {"b_namespace": namespace, "b_group": group_id, "b_name": name}
        row = await self._fetch_one(_FIND_JOB, params)
        return None if row is None else job_from_row(row)

    async def list_jobs(
        self,
        namespace: str,
        group_id: str,
        *,
        name_contains: str | None = None,
        enabled: bool | None = None,
        time_type: TimeType | None = None,
        execute_mode: ExecuteMode | None = None,
        offset: int = 0,
        limit: int = 50,
    ) -> Page[Job]:
        check_page(offset, limit)
        t = tables.jobs
        where = [t.c.namespace == namespace, t.c.group_id == group_id]
        if name_contains:
            where.append(t.c.name.icontains(name_contains, autoescape=True))
        if enabled is not None:
            where.append(t.c.enabled == enabled)
        if time_type is not None:
            where.append(t.c.time_type == int(time_type))
        if execute_mode is not None:
            # The spec is compact JSON with sorted keys (dump_spec), so the pair appears literally; a
            # string value holding these characters would have its quotes escaped and cannot match.
            where.append(t.c.spec.contains(f'"execute_mode":"{execute_mode.value}"', autoescape=True))
        return await self._read_page(
            t, where, order_by=t.c.id, offset=offset, limit=limit, record=job_from_row
        )

    async def update_job(
        self,
        job_id: int,
        *,
        spec: JobSpec | None = None,
        enabled: bool | None = None,
        managed: bool | None = None,
        next_fire_time: datetime | None = None,
        clear_next_fire_time: bool = False,
    ) -> Job:
        if next_fire_time is not None and clear_next_fire_time:
            raise ValueError(
                f"next_fire_time={next_fire_time.isoformat()!r}: "
                "cannot be given together with clear_next_fire_time"
            )
        check_aware("next_fire_time", next_fire_time)
        values: dict[str, Any] = {"updated_at": utc_now()}
        if spec is not None:
            values["spec"], values["time_type"] = dump_spec(spec)
            values["name"] = spec.name
        if enabled is not None:
            values["enabled"] = enabled
        if managed is not None:
            values["managed"] = managed
        if next_fire_time is not None:
            values["next_fire_time"] = next_fire_time
        elif clear_next_fire_time:
            values["next_fire_time"] = None
        t = tables.jobs
        self._jobs_changed()
        try:
            async with self._write() as conn:
                row = (
                    await conn.execute(sa.update(t).where(t.c.id == job_id).values(values).returning(*t.c))
                ).one_or_none()
        except IntegrityError:
            name = spec.name if spec is not None else "?"
            raise DuplicateError(f"job {job_id}: its group already has a job named {name!r}") from None
        finally:
            self._jobs_changed()
        if row is None:
            raise NotFoundError(f"job_id={job_id!r}: no such job")
        return job_from_row(row)

    async def delete_job(self, job_id: int) -> bool:
        self._jobs_changed()
        try:
            async with self._write() as conn:
                await conn.execute(sa.delete(tables.instances).where(tables.instances.c.job_id == job_id))
                result = await conn.execute(sa.delete(tables.jobs).where(tables.jobs.c.id == job_id))
        finally:
            self._jobs_changed()
        return result.rowcount > 0

    # -- the trigger engine ---------------------------------------------------------------------

    async def next_due_time(self) -> datetime | None:
        t = tables.jobs
        # ORDER BY .. LIMIT 1 (not min()) so SQLite walks the partial index too.
        query = (
            sa.select(t.c.next_fire_time).where(JOB_CAN_FIRE).order_by(t.c.next_fire_time, t.c.id).limit(1)
        )
        async with self._read() as conn:
            value: datetime | None = (await conn.execute(query)).scalar_one_or_none()
        return value

    async def due_jobs(self, now: datetime, limit: int) -> list[Job]:
        check_page(0, limit)
        check_aware("now", now)
        t = tables.jobs
        query = (
            sa.select(t)
            .where(JOB_CAN_FIRE, t.c.next_fire_time <= sa.literal(now, UtcDateTime()))
            .order_by(t.c.next_fire_time, t.c.id)
            .limit(limit)
        )
        async with self._read() as conn:
            rows = (await conn.execute(query)).all()
        return [job_from_row(r) for r in rows]

    async def claim_fires(self, fires: Sequence[Fire]) -> list[Instance | None]:
        for index, fire in enumerate(fires):
            if fire.instance is not None and fire.instance.job_id != fire.job_id:
                raise ValueError(
                    f"fires[{index}].instance.job_id={fire.instance.job_id!r}: "
                    f"differs from the fire's job_id {fire.job_id!r}"
                )
            check_aware(f"fires[{index}].due", fire.due)
            check_aware(f"fires[{index}].next_fire_time", fire.next_fire_time)
            if fire.instance is not None:
                check_new_instance(fire.instance, f"fires[{index}].instance.")
        if not fires:
            return []
        for attempt in range(1, _CLAIM_ATTEMPTS + 1):
            self._jobs_changed()
            try:
                async with self._write() as conn:
                    return await self._claim(conn, fires)
            except DBAPIError as exc:
                # Only PostgreSQL reports these; the whole transaction rolled back, so try again.
                if attempt == _CLAIM_ATTEMPTS or sqlstate(exc) not in _RETRYABLE_SQLSTATES:
                    raise
                log.info("claim_fires: retrying after %s (attempt %d)", sqlstate(exc), attempt)
            finally:
                self._jobs_changed()
        raise AssertionError("unreachable")

    async def _claim(self, conn: AsyncConnection, fires: Sequence[Fire]) -> list[Instance | None]:
        t = tables.jobs
        # Lock the jobs, then read where they stand: on PostgreSQL with row locks taken in id order
        # (so replicas claiming overlapping batches cannot deadlock), on SQLite by the write
        # transaction itself. Nothing can move them before commit, so the winners are decided here.
        ids = sorted({fire.job_id for fire in fires})
        current: dict[int, datetime | None] = {}
        for start in range(0, len(ids), _ID_CHUNK):
            query = (
                sa.select(t.c.id, t.c.next_fire_time)
                .where(t.c.id.in_(ids[start : start + _ID_CHUNK]), t.c.enabled == sa.true())
                .order_by(t.c.id)
            )
            if not self._is_sqlite:
                query = query.with_for_update()
            current.update((row.id, row.next_fire_time) for row in await conn.execute(query))
        winners: list[int] = []
        for index, fire in enumerate(fires):
            # In order, so a job's second fire in one call (due = the first one's new time) wins too.
            if fire.job_id in current and current[fire.job_id] == fire.due:
                current[fire.job_id] = fire.next_fire_time
                winners.append(index)
        if not winners:
            return [None] * len(fires)
        # The compare-and-set, per fire, in order; the guard repeats the decision made above.
        claim = (
            sa.update(t)
            .where(
                t.c.id == sa.bindparam("b_id", type_=sa.BigInteger()),
                t.c.enabled == sa.true(),
                t.c.next_fire_time == sa.bindparam("b_due", type_=UtcDateTime()),
            )
            .values(next_fire_time=sa.bindparam("b_new", type_=UtcDateTime()))
        )
        params = [
            {"b_id": fires[i].job_id, "b_due": fires[i].due, "b_new": fires[i].next_fire_time}
            for i in winners
        ]
        moved = (await conn.execute(claim, params)).rowcount
        if moved not in (-1, len(winners)):
            raise StoreError(f"claim_fires: {moved} of {len(winners)} locked jobs moved; rolled back")
        created_at = utc_now()
        wanted = [i for i in winners if fires[i].instance is not None]
        news = [instance for i in wanted if (instance := fires[i].instance) is not None]
        out: list[Instance | None] = [None] * len(fires)
        if not news:
            return out
        ids_made = await self._insert_instances(conn, news, created_at)
        for i, new, instance_id in zip(wanted, news, ids_made, strict=True):
            out[i] = created_instance(instance_id, new, created_at)
        return out

    async def _insert_instances(
        self, conn: AsyncConnection, news: Sequence[NewInstance], created_at: datetime
    ) -> list[int]:
        """Insert instances in one batch; their ids in the order given."""
        t = tables.instances
        rows = [new_instance_values(new, created_at) for new in news]
        if not self._is_sqlite:
            result = await conn.execute(sa.insert(t).returning(t.c.id, sort_by_parameter_order=True), rows)
            return list(result.scalars().all())
        # A plain executemany is several times faster on SQLite than INSERT .. RETURNING batches. This
        # transaction is the only writer and AUTOINCREMENT ids only grow, so the new rows are exactly
        # those above the previous highest id, in insertion order.
        before = (await conn.execute(sa.select(sa.func.coalesce(sa.func.max(t.c.id), 0)))).scalar_one()
        await conn.execute(sa.insert(t), rows)
        made = list((await conn.execute(sa.select(t.c.id).where(t.c.id > before).order_by(t.c.id))).scalars())
        if len(made) != len(rows):
            raise StoreError(f"inserted {len(rows)} instances but found {len(made)} new rows; rolled back")
        return made
