"""Scheduler replicas, group leases and signals between replicas (`LeaseStore`) on SQL.

On PostgreSQL each replica keeps a connection of its own (its *presence*): it holds an advisory lock
keyed by the replica's presence key, and LISTENs for signals. The server frees the lock the moment the
process dies, so the others see a killed replica gone at once rather than when its check-in lapses; a
paused replica keeps its lock but stops checking in, and its leases lapse. On SQLite one scheduler holds
the file, so presence is the process itself and signals are delivered in-process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any, Final

import asyncpg
import sqlalchemy as sa

from sx.processors.engine import ACTIVE_INSTANCE_STATUSES
from sx.scheduler.store._lease_store import LeaseStore
from sx.scheduler.store._records import GroupLease, SchedulerReplica
from sx.scheduler.store.sql import _tables as tables
from sx.scheduler.store.sql._engine import SqlStoreBase
from sx.scheduler.store.sql._rows import lease_from_row, replica_from_row
from sx.scheduler.store.sql._tables import UtcDateTime

__all__ = ["SIGNAL_CHANNEL", "SqlLeases"]

log = logging.getLogger("sx.scheduler.store")

SIGNAL_CHANNEL: Final = "sx_scheduler_signals"
# The first half of every presence lock's two-part key ("SX"): the second half is the replica's key.
_PRESENCE_CLASS: Final = 0x5358
_PRESENCE_CONNECT_TIMEOUT: Final = 10.0

_s = tables.schedulers
_l = tables.group_leases
_r = tables.stop_requests
_i = tables.instances
_NOW: Final = sa.bindparam("b_now", type_=UtcDateTime())


class SqlLeases(SqlStoreBase, LeaseStore):
    """`LeaseStore` on SQL."""

    _presence: asyncpg.Connection | None = None
    _on_signal: Callable[[str], None] | None = None

    async def check_in(self, replica: SchedulerReplica, *, now: datetime, ttl: timedelta) -> None:
        values = {
            "replica_id": replica.replica_id,
            "grpc_address": replica.grpc_address,
            "http_url": replica.http_url,
            "presence_key": replica.presence_key,
            "expires_at": now + ttl,
        }
        insert = self._insert(_s).values(**values)
        upsert = insert.on_conflict_do_update(
            index_elements=[_s.c.replica_id],
            set_={name: insert.excluded[name] for name in values if name != "replica_id"},
        )
        async with self._write() as conn:
            if self._file_lock is not None:
                # This process holds the SQLite file alone: any other replica recorded is long gone.
                await conn.execute(sa.delete(_s).where(_s.c.replica_id != replica.replica_id))
            await conn.execute(upsert)

    async def check_out(self, replica_id: str, *, now: datetime) -> None:
        async with self._write() as conn:
            await conn.execute(sa.delete(_s).where(_s.c.replica_id == replica_id))
            await conn.execute(
                sa.update(_l).where(_l.c.holder == replica_id).values(holder="", expires_at=now)
            )

    async def live_replicas(self, *, now: datetime) -> list[SchedulerReplica]:
        query = sa.select(_s).where(_s.c.expires_at > now).order_by(_s.c.replica_id)
        if self._is_sqlite:
            async with self._read() as conn:
                return [replica_from_row(row) for row in await conn.execute(query)]
        # A presence lock this transaction can take is held by no one: that replica's process is gone.
        # (Transaction-level: released at the end of this read.)
        vacant = sa.func.pg_try_advisory_xact_lock(_PRESENCE_CLASS, _s.c.presence_key).label("vacant")
        async with self._write() as conn:
            rows = (await conn.execute(query.add_columns(vacant))).all()
        return [replica_from_row(row) for row in rows if not row.vacant]

    async def group_leases(self) -> list[GroupLease]:
        async with self._read() as conn:
            rows = await conn.execute(sa.select(_l).order_by(_l.c.namespace, _l.c.group_id))
            return [lease_from_row(row) for row in rows]

    async def take_lease(
        self,
        namespace: str,
        group_id: str,
        *,
        holder: str,
        now: datetime,
        ttl: timedelta,
        replacing: GroupLease | None,
    ) -> GroupLease | None:
        token = uuid.uuid4().hex
        expires_at = now + ttl
        async with self._write() as conn:
            if replacing is None:
                insert = (
                    self._insert(_l)
                    .values(
                        namespace=namespace,
                        group_id=group_id,
                        holder=holder,
                        token=token,
                        epoch=1,
                        expires_at=expires_at,
                        acquired_at=now,
                        renewed_at=now,
                        workers="[]",
                    )
                    .on_conflict_do_nothing(index_elements=[_l.c.namespace, _l.c.group_id])
                    .returning(*_l.c)
                )
                row = (await conn.execute(insert)).one_or_none()
            else:
                # Compare-and-set on the old token; the row lock waits for writes fenced by it.
                update = (
                    sa.update(_l)
                    .where(
                        _l.c.namespace == namespace,
                        _l.c.group_id == group_id,
                        _l.c.token == replacing.token,
                    )
                    .values(
                        holder=holder,
                        token=token,
                        epoch=_l.c.epoch + 1,
                        expires_at=expires_at,
                        acquired_at=now,
                        renewed_at=now,
                        workers="[]",
                    )
                    .returning(*_l.c)
                )
                row = (await conn.execute(update)).one_or_none()
        return None if row is None else lease_from_row(row)

    async def renew_leases(
        self, holder: str, tokens: Sequence[str], *, now: datetime, ttl: timedelta, workers: dict[str, str]
    ) -> set[str]:
        if not tokens:
            return set()
        renewed: set[str] = set()
        async with self._write() as conn:
            for token in tokens:
                update = (
                    sa.update(_l)
                    .where(_l.c.token == token, _l.c.holder == holder, _l.c.expires_at > _NOW)
                    .values(expires_at=now + ttl, renewed_at=now, workers=workers.get(token, "[]"))
                )
                if (await conn.execute(update, {"b_now": now})).rowcount:
                    renewed.add(token)
        return renewed

    async def release_lease(self, token: str, *, now: datetime) -> None:
        async with self._write() as conn:
            await conn.execute(sa.update(_l).where(_l.c.token == token).values(holder="", expires_at=now))

    # -- presence and signals ---------------------------------------------------------------------
    async def attending(self) -> bool:
        if self._is_sqlite:
            return self._on_signal is not None
        presence = self._presence
        return presence is not None and not presence.is_closed()

    async def attend(self, presence_key: int, on_signal: Callable[[str], None]) -> None:
        self._on_signal = on_signal
        if self._is_sqlite:
            return
        await self._close_presence()
        dsn = self._url.set(drivername="postgresql").render_as_string(hide_password=False)
        connection: asyncpg.Connection = await asyncpg.connect(dsn, timeout=_PRESENCE_CONNECT_TIMEOUT)
        try:
            locked = await connection.fetchval(
                "SELECT pg_try_advisory_lock($1, $2)", _PRESENCE_CLASS, presence_key
            )
            if not locked:
                raise RuntimeError(f"presence_key={presence_key}: another scheduler holds it")

            def deliver(_conn: Any, _pid: int, _channel: str, payload: str) -> None:
                handler = self._on_signal
                if handler is not None:
                    handler(payload)

            await connection.add_listener(SIGNAL_CHANNEL, deliver)
        except BaseException:
            await connection.close()
            raise
        self._presence = connection

    async def signal(self, payload: str) -> None:
        if self._is_sqlite:
            handler = self._on_signal
            if handler is not None:
                asyncio.get_running_loop().call_soon(handler, payload)
            return
        async with self._write() as conn:
            await conn.execute(sa.select(sa.func.pg_notify(SIGNAL_CHANNEL, payload)))

    async def request_stop(self, instance_id: int, reason: str, *, now: datetime) -> None:
        insert = self._insert(_r).values(instance_id=instance_id, reason=reason, requested_at=now)
        upsert = insert.on_conflict_do_update(
            index_elements=[_r.c.instance_id],
            set_={"reason": insert.excluded.reason, "requested_at": insert.excluded.requested_at},
        )
        async with self._write() as conn:
            await conn.execute(upsert)

    async def stop_requests(self, namespace: str, group_id: str) -> list[tuple[int, str]]:
        query = (
            sa.select(_r.c.instance_id, _r.c.reason)
            .join(_i, _i.c.id == _r.c.instance_id)
            .where(
                _i.c.namespace == namespace,
                _i.c.group_id == group_id,
                _i.c.status.in_([int(s) for s in ACTIVE_INSTANCE_STATUSES]),
            )
            .order_by(_r.c.instance_id)
        )
        async with self._read() as conn:
            return [(row.instance_id, row.reason) for row in await conn.execute(query)]

    async def _close_presence(self) -> None:
        presence, self._presence = self._presence, None
        if presence is not None:
            with contextlib.suppress(Exception):
                await presence.close(timeout=2)

    async def close(self) -> None:
        self._on_signal = None
        await self._close_presence()
        await super().close()
