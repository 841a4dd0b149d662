"""Job instances (`InstanceStore`) on SQL."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from sx.processors import InstanceStatus, TriggerType
from sx.processors.engine import ACTIVE_INSTANCE_STATUSES
from sx.scheduler.store._errors import FencedError, NotFoundError
from sx.scheduler.store._instance_store import InstanceStore
from sx.scheduler.store._records import Fence, Instance, InstanceChange, NewInstance, Page
from sx.scheduler.store.sql import _tables as tables
from sx.scheduler.store.sql._dialect import is_foreign_key_violation
from sx.scheduler.store.sql._direct import DirectStatement, compiled_once
from sx.scheduler.store.sql._engine import SqlStoreBase
from sx.scheduler.store.sql._rows import (
    check_aware,
    check_new_instance,
    check_page,
    created_instance,
    instance_from_row,
    new_instance_values,
    utc_now,
)
from sx.scheduler.store.sql._tables import UtcDateTime

__all__ = ["SqlInstances"]

_FINISHED: Final = tuple(s for s in InstanceStatus if s.finished)

# -- hot statements, built once ----------------------------------------------------------------------
# Building a statement per call costs more than running it: a new statement object has to be walked
# again for its compiled-cache key. These are built once and bound per call.
_t_instances = tables.instances
_GET_INSTANCE: Final = sa.select(_t_instances).where(_t_instances.c.id == sa.bindparam("b_id"))
# Backfill instances (data re-runs) keep a concurrency of their own: they never take the live fires'
# maxConcurrency, nor count against it.
_NOT_BACKFILL: Final = _t_instances.c.trigger_type != int(TriggerType.DATA_RERUN)
_COUNT_ACTIVE: Final = (
    sa.select(sa.func.count())
    .select_from(_t_instances)
    .where(
        _t_instances.c.job_id == sa.bindparam("b_job_id"),
        _t_instances.c.status.in_([int(s) for s in ACTIVE_INSTANCE_STATUSES]),
        _NOT_BACKFILL,
    )
)
_ACTIVE_ROWS: Final = (
    sa.select(sa.literal(1))
    .select_from(_t_instances)
    .where(
        _t_instances.c.job_id == sa.bindparam("b_job_id"),
        _t_instances.c.status.in_([int(s) for s in ACTIVE_INSTANCE_STATUSES]),
        _NOT_BACKFILL,
    )
    .limit(sa.bindparam("b_limit"))
    .subquery()
)
# The job's active instances, counted no further than the limit they are compared with.
_COUNT_ACTIVE_UP_TO: Final = sa.select(sa.func.count()).select_from(_ACTIVE_ROWS)
# The same with the highest instance id at that moment, read in one statement (one snapshot).
_COUNT_ACTIVE_UP_TO_AND_LAST_ID: Final = sa.select(
    _COUNT_ACTIVE_UP_TO.scalar_subquery(),
    sa.select(sa.func.coalesce(sa.func.max(_t_instances.c.id), 0)).scalar_subquery(),
)
# The job's instances created after a given id, whatever their status (the ix_sx_instances_job index
# alone answers it), counted no further than b_limit.
_COUNT_NEWER: Final = sa.select(sa.func.count()).select_from(
    sa.select(sa.literal(1))
    .select_from(_t_instances)
    .where(_t_instances.c.job_id == sa.bindparam("b_job_id"), _t_instances.c.id > sa.bindparam("b_after"))
    .limit(sa.bindparam("b_limit"))
    .subquery()
)
_NEWEST_ID: Final = sa.select(sa.func.coalesce(sa.func.max(_t_instances.c.id), 0))
# How many instances created since a job's last exact count the in-memory bound covers before the
# job is counted again (the look-up of the newer ones grows with them).
_RECOUNT_AFTER: Final = 512
_ACTIVE: Final = frozenset(ACTIVE_INSTANCE_STATUSES)
_STATUS_IN: Final = _t_instances.c.status.in_(sa.bindparam("b_statuses", expanding=True))
_GET_INSTANCE_IF: Final = _GET_INSTANCE.where(_STATUS_IN)
# The SET clause is the columns named in the parameters.
# A fenced write first reads which of its instances' group leases the writer holds (FOR SHARE on
# PostgreSQL: a replica taking a lease over waits for the writes fenced by the old token to commit).
_t_leases = tables.group_leases
_FENCED_IDS: Final = (
    sa.select(_t_instances.c.id)
    .join(
        _t_leases,
        sa.and_(
            _t_leases.c.namespace == _t_instances.c.namespace,
            _t_leases.c.group_id == _t_instances.c.group_id,
        ),
    )
    .where(
        _t_instances.c.id.in_(sa.bindparam("b_ids", expanding=True)),
        _t_leases.c.token.in_(sa.bindparam("b_tokens", expanding=True)),
        _t_leases.c.expires_at > sa.bindparam("b_now", type_=UtcDateTime()),
    )
    .with_for_update(read=True, of=_t_leases)
)
# Pruning: the newest finished instance beyond `keep` (it and everything older go). One index range per
# finished status ((job_id, status) holds the id too): a single `status IN` query is planned on the
# (job_id, id) index and walks every waiting instance of a backlog first, per finished one.
_PRUNE_PER_STATUS = sa.union_all(
    *(
        sa.select(_t_instances.c.id).where(
            _t_instances.c.job_id == sa.bindparam("b_job_id"), _t_instances.c.status == int(s)
        )
        for s in _FINISHED
    )
).subquery()
_PRUNE_BOUNDARY: Final = (
    sa.select(_PRUNE_PER_STATUS.c.id)
    .order_by(_PRUNE_PER_STATUS.c.id.desc())
    .offset(sa.bindparam("b_keep", type_=sa.Integer))
    .limit(1)
)
_PRUNE: Final = sa.delete(_t_instances).where(
    _t_instances.c.job_id == sa.bindparam("b_job_id"),
    _t_instances.c.status.in_([int(s) for s in _FINISHED]),
    _t_instances.c.id <= sa.bindparam("b_oldest"),
)
_EXISTING_IDS: Final = sa.select(_t_instances.c.id).where(
    _t_instances.c.id.in_(sa.bindparam("b_ids", expanding=True))
)


def _check_fence(conn: Connection, instance_ids: list[int], fence: Fence | None) -> None:
    """Raise FencedError unless the fence holds the group lease of every existing one of the instances."""
    if fence is None or not instance_ids:
        return
    params = {"b_ids": instance_ids, "b_tokens": sorted(fence.tokens) or [""], "b_now": fence.now}
    held = {row[0] for row in conn.execute(_FENCED_IDS, params)}
    if len(held) == len(instance_ids):
        return
    unheld = [i for i in instance_ids if i not in held]
    existing = sorted(row[0] for row in conn.execute(_EXISTING_IDS, {"b_ids": unheld}))
    if existing:
        raise FencedError(
            f"instances {existing}: this scheduler no longer holds their group's lease", instance_ids=existing
        )


_CHANGE_FIELDS: Final = (
    "status",
    "start_time",
    "end_time",
    "worker_id",
    "worker_addr",
    "executor",
    "result",
    "progress",
    "timeout_alarmed",
)


def _update_row(conn: Connection, params: dict[str, Any]) -> sa.Row[Any] | None:
    """Apply one change (``_instance_change_params``) in ``conn``'s transaction, on the driver's cursor
    (the hottest write: two per instance): the row after, or None when the instance does not exist or
    its status is not one of the guard's."""
    statuses: list[int] = params.get("b_statuses", [])
    columns = tuple(name for name in params if not name.startswith("b_"))

    def build() -> DirectStatement:
        t = _t_instances
        update = (
            sa.update(t)
            .where(t.c.id == sa.bindparam("b_id"))
            .values({name: sa.bindparam(name, type_=t.c[name].type) for name in columns})
        )
        if statuses:
            update = update.where(t.c.status.in_([sa.bindparam(f"b_s{n}") for n in range(len(statuses))]))
        return DirectStatement.compile(update.returning(*t.c), conn.dialect, t.c)

    direct = compiled_once(("instance update", conn.dialect.name, columns, len(statuses)), build)
    rows = direct.run(conn, {**params, **{f"b_s{n}": status for n, status in enumerate(statuses)}})
    return rows[0] if rows else None


def _insert_row(conn: Connection, values: dict[str, Any]) -> int:
    """Insert an instance (``new_instance_values``) in ``conn``'s transaction, on the driver's cursor;
    its id."""

    def build() -> DirectStatement:
        t = _t_instances
        insert = sa.insert(t).values({name: sa.bindparam(name, type_=t.c[name].type) for name in values})
        return DirectStatement.compile(insert.returning(t.c.id), conn.dialect, [t.c.id])

    direct = compiled_once(("instance insert", conn.dialect.name, tuple(values)), build)
    instance_id: int = direct.run(conn, values)[0].id
    return instance_id


def _may_reopen(change: InstanceChange, only_if_status: Sequence[InstanceStatus] | None) -> bool:
    """Whether a change may turn a finished instance active again."""
    if change.status is None or change.status not in _ACTIVE:
        return False
    return only_if_status is None or any(s not in _ACTIVE for s in only_if_status)


def _instance_change_params(
    instance_id: int, change: InstanceChange, only_if_status: Sequence[InstanceStatus] | None
) -> dict[str, Any]:
    """The parameters of one change (``_update_row``): the id, the guard, the set fields."""
    params: dict[str, Any] = {"b_id": instance_id}
    if only_if_status is not None:
        params["b_statuses"] = [int(s) for s in only_if_status]
    for name in _CHANGE_FIELDS:
        value = getattr(change, name)
        if value is not None:
            if isinstance(value, datetime):
                check_aware(f"change.{name}", value)
            params[name] = int(value) if name == "status" else value
    return params


class SqlInstances(SqlStoreBase, InstanceStore):
    """`InstanceStore` on SQL."""

    # See active_instances_below: set on first use; the generation changes when they are dropped.
    _active_bounds: dict[int, tuple[int, int]] | None = None
    _active_bounds_generation: int = 0

    async def create_instance(self, new: NewInstance) -> Instance:
        check_new_instance(new)
        created_at = utc_now()
        values = new_instance_values(new, created_at)
        try:
            instance_id: int = await self._write_sync(lambda conn: _insert_row(conn, values))
        except IntegrityError as exc:
            if is_foreign_key_violation(exc):
                raise NotFoundError(f"job_id={new.job_id!r}: no such job") from None
            raise
        return created_instance(instance_id, new, created_at)

    async def get_instance(self, instance_id: int) -> Instance | None:
        row = await self._fetch_one(_GET_INSTANCE, {"b_id": instance_id})
        return None if row is None else instance_from_row(row)

    async def list_instances(
        self,
        job_id: int,
        *,
        statuses: Sequence[InstanceStatus] | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        offset: int = 0,
        limit: int = 10,
    ) -> Page[Instance]:
        """A job's instances, newest (highest id) first; ``since <= schedule_time <= until``."""
        check_page(offset, limit)
        check_aware("since", since)
        check_aware("until", until)
        t = tables.instances
        where: list[sa.ColumnElement[bool]] = [t.c.job_id == job_id]
        if statuses is not None:
            where.append(t.c.status.in_([int(s) for s in statuses]))
        if since is not None:
            where.append(t.c.schedule_time >= sa.literal(since, UtcDateTime()))
        if until is not None:
            where.append(t.c.schedule_time <= sa.literal(until, UtcDateTime()))
        return await self._read_page(
            t, where, order_by=t.c.id.desc(), offset=offset, limit=limit, record=instance_from_row
        )

    async def list_group_instances(
        self,
        namespace: str,
        group_id: str,
        *,
        job_id: int | None = None,
        statuses: Sequence[InstanceStatus] | None = None,
        trigger_types: Sequence[TriggerType] | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        offset: int = 0,
        limit: int = 10,
    ) -> Page[Instance]:
        check_page(offset, limit)
        check_aware("since", since)
        check_aware("until", until)
        t = tables.instances
        where: list[sa.ColumnElement[bool]] = [t.c.namespace == namespace, t.c.group_id == group_id]
        if job_id is not None:
            where.append(t.c.job_id == job_id)
        if statuses is not None:
            where.append(t.c.status.in_([int(s) for s in statuses]))
        if trigger_types is not None:
            where.append(t.c.trigger_type.in_([int(s) for s in trigger_types]))
        if since is not None:
            where.append(t.c.schedule_time >= sa.literal(since, UtcDateTime()))
        if until is not None:
            where.append(t.c.schedule_time <= sa.literal(until, UtcDateTime()))
        return await self._read_page(
            t, where, order_by=t.c.id.desc(), offset=offset, limit=limit, record=instance_from_row
        )

    async def instances_with_status(
        self,
        statuses: Sequence[InstanceStatus],
        *,
        limit: int = 1000,
        group_id: str | None = None,
        namespace: str | None = None,
    ) -> list[Instance]:
        check_page(0, limit)
        t = tables.instances
        query = sa.select(t).where(t.c.status.in_([int(s) for s in statuses]))
        if group_id is not None:
            query = query.where(t.c.group_id == group_id)
        if namespace is not None:
            query = query.where(t.c.namespace == namespace)
        async with self._read() as conn:
            rows = (await conn.execute(query.order_by(t.c.id).limit(limit))).all()
        return [instance_from_row(r) for r in rows]

    async def update_instance(
        self,
        instance_id: int,
        change: InstanceChange,
        *,
        only_if_status: Sequence[InstanceStatus] | None = None,
        fence: Fence | None = None,
    ) -> Instance | None:
        params = _instance_change_params(instance_id, change, only_if_status)
        fence = self._fence_to_check(fence)
        reopens = _may_reopen(change, only_if_status)
        if reopens:
            self._forget_active_bounds()
        row: sa.Row[Any] | None
        if len(params) == (1 if only_if_status is None else 2):  # nothing to set: a guarded read
            row = await self._fetch_one(_GET_INSTANCE if only_if_status is None else _GET_INSTANCE_IF, params)
        else:

            def work(conn: Connection) -> sa.Row[Any] | None:
                _check_fence(conn, [instance_id], fence)
                return _update_row(conn, params)

            row = await self._write_sync(work)
            if reopens:
                self._forget_active_bounds()
        return None if row is None else instance_from_row(row)

    async def update_instances(
        self,
        changes: Sequence[tuple[int, InstanceChange]],
        *,
        only_if_status: Sequence[InstanceStatus] | None = None,
        fence: Fence | None = None,
    ) -> dict[int, Instance | None]:
        found: dict[int, Instance | None] = {}
        fence = self._fence_to_check(fence)
        reopens = any(_may_reopen(change, only_if_status) for _, change in changes)
        if reopens:
            self._forget_active_bounds()
        for start in range(0, len(changes), 500):  # bounded transactions
            chunk = [
                _instance_change_params(i, change, only_if_status)
                for i, change in changes[start : start + 500]
            ]

            def work(conn: Connection, chunk: list[dict[str, Any]] = chunk) -> list[sa.Row[Any] | None]:
                _check_fence(conn, [params["b_id"] for params in chunk], fence)
                return [_update_row(conn, params) for params in chunk]

            rows = await self._write_sync(work)
            found.update(
                {
                    params["b_id"]: None if row is None else instance_from_row(row)
                    for params, row in zip(chunk, rows, strict=True)
                }
            )
        if reopens:
            self._forget_active_bounds()
        return found

    async def count_active_instances(self, job_id: int) -> int:
        # A bounded read: the (job_id, status) index holds just the job's active instances.
        row = await self._fetch_one(_COUNT_ACTIVE, {"b_job_id": job_id})
        assert row is not None  # COUNT always answers one row
        return int(row[0])

    async def active_instances_below(self, job_id: int, limit: int) -> bool:
        if not self._sole_writer:
            row = await self._fetch_one(_COUNT_ACTIVE_UP_TO, {"b_job_id": job_id, "b_limit": limit})
            assert row is not None  # COUNT always answers one row
            return int(row[0]) < limit
        # This store is the database's only scheduler, and AUTOINCREMENT ids only grow: the job's
        # active instances are at most those counted at its last exact count (finished ones never come
        # back without _forget_active_bounds) plus every instance of the job created since, whatever its
        # kind or status. While that bound is below the limit, the job has room without counting its
        # active instances, which costs a row look-up each.
        bounds = self._active_bound_table()
        bound = bounds.get(job_id)
        if bound is not None:
            counted, last_id = bound
            if counted < limit:
                # Every instance created since may be the job's: the newest id bounds them (one index
                # step), and while it is below the limit no counting is needed at all.
                newest = await self._fetch_one(_NEWEST_ID, {}, direct=True)
                assert newest is not None  # MAX always answers one row
                if counted + (int(newest[0]) - last_id) < limit:
                    return True
                params = {"b_job_id": job_id, "b_after": last_id, "b_limit": _RECOUNT_AFTER}
                row = await self._fetch_one(_COUNT_NEWER, params, direct=True)
                assert row is not None
                newer = int(row[0])
                if newer < _RECOUNT_AFTER and counted + newer < limit:
                    return True
        generation = self._active_bounds_generation
        row = await self._fetch_one(_COUNT_ACTIVE_UP_TO_AND_LAST_ID, {"b_job_id": job_id, "b_limit": limit})
        assert row is not None
        counted, last_id = map(int, row)
        if generation == self._active_bounds_generation:  # no instance re-opened meanwhile
            bounds[job_id] = (counted, last_id)
        return counted < limit

    def _fence_to_check(self, fence: Fence | None) -> Fence | None:
        """The fence to check: none on a store that alone writes its database, where no other scheduler
        can hold a group's lease (checking would read the lease rows on every report)."""
        return None if self._sole_writer else fence

    def _active_bound_table(self) -> dict[int, tuple[int, int]]:
        """Per job: its active instances at its last exact count, and the highest instance id then."""
        if self._active_bounds is None:
            self._active_bounds = {}
        return self._active_bounds

    def _forget_active_bounds(self) -> None:
        """Drop the in-memory bounds, before and after a write that may make a finished instance active
        again (re-opened for a task retry): such an instance is no longer under its job's bound."""
        self._active_bounds_generation += 1
        if self._active_bounds:
            self._active_bounds.clear()

    async def count_active_instances_by_job(self, job_ids: Sequence[int]) -> dict[int, int]:
        t = tables.instances
        counts: dict[int, int] = {}
        for start in range(0, len(job_ids), 500):  # bounded IN lists
            chunk = list(job_ids[start : start + 500])
            query = (
                sa.select(t.c.job_id, sa.func.count())
                .where(
                    t.c.job_id.in_(chunk),
                    t.c.status.in_([int(s) for s in ACTIVE_INSTANCE_STATUSES]),
                    _NOT_BACKFILL,
                )
                .group_by(t.c.job_id)
            )
            async with self._read() as conn:
                counts.update({int(row[0]): int(row[1]) for row in await conn.execute(query)})
        return counts

    async def find_retry(self, instance_id: int) -> Instance | None:
        t = tables.instances
        query = sa.select(t).where(t.c.retry_of == instance_id).order_by(t.c.id).limit(1)
        async with self._read() as conn:
            row = (await conn.execute(query)).one_or_none()
        return None if row is None else instance_from_row(row)

    async def prune_instances(self, job_id: int, keep: int) -> int:
        if keep <= 0:
            return 0  # keeping no limit: history is kept whole
        params = {"b_job_id": job_id, "b_keep": keep}

        def work(conn: Connection) -> int:
            oldest_pruned = conn.execute(_PRUNE_BOUNDARY, params).scalar_one_or_none()
            if oldest_pruned is None:
                return 0
            return conn.execute(_PRUNE, {"b_job_id": job_id, "b_oldest": oldest_pruned}).rowcount

        return await self._write_sync(work)
