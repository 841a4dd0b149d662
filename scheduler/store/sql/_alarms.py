"""Alarm records (`AlarmStore`) on SQL."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from sx.scheduler.store._instance_store import AlarmStore
from sx.scheduler.store._records import Alarm, Page
from sx.scheduler.store.sql import _tables as tables
from sx.scheduler.store.sql._engine import SqlStoreBase
from sx.scheduler.store.sql._rows import alarm_from_row, check_aware, check_page, utc_now
from sx.scheduler.store.sql._tables import UtcDateTime

__all__ = ["SqlAlarms"]


class SqlAlarms(SqlStoreBase, AlarmStore):
    """`AlarmStore` on SQL."""

    async def record_alarm(
        self,
        *,
        namespace: str,
        group_id: str,
        job_id: int,
        instance_id: int | None,
        kind: str,
        channel: str,
        message: str,
        delivered: bool,
        detail: dict[str, Any] | None = None,
    ) -> Alarm:
        created_at = utc_now()
        detail = dict(detail or {})
        try:
            detail_text = json.dumps(detail, sort_keys=True)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"detail={detail!r}: not JSON-serializable ({exc})") from None
        values = {
            "namespace": namespace,
            "group_id": group_id,
            "job_id": job_id,
            "instance_id": instance_id,
            "kind": kind,
            "channel": channel,
            "message": message,
            "delivered": delivered,
            "created_at": created_at,
            "detail": detail_text,
        }
        t = tables.alarms
        async with self._write() as conn:
            alarm_id = (await conn.execute(sa.insert(t).values(values).returning(t.c.id))).scalar_one()
        return Alarm(
            id=alarm_id,
            namespace=namespace,
            group_id=group_id,
            job_id=job_id,
            instance_id=instance_id,
            kind=kind,
            channel=channel,
            message=message,
            delivered=delivered,
            created_at=created_at,
            detail=detail,
        )

    async def list_alarms(self, *, job_id: int | None = None, limit: int = 100) -> list[Alarm]:
        """Alarms newest first, optionally of one job."""
        check_page(0, limit)
        t = tables.alarms
        query = sa.select(t).order_by(t.c.id.desc()).limit(limit)
        if job_id is not None:
            query = query.where(t.c.job_id == job_id)
        async with self._read() as conn:
            rows = (await conn.execute(query)).all()
        return [alarm_from_row(r) for r in rows]

    async def page_alarms(
        self,
        namespace: str,
        group_id: str,
        *,
        job_id: int | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        delivered: bool | None = None,
        offset: int = 0,
        limit: int = 20,
    ) -> Page[Alarm]:
        check_page(offset, limit)
        check_aware("since", since)
        check_aware("until", until)
        t = tables.alarms
        where: list[sa.ColumnElement[bool]] = [t.c.namespace == namespace, t.c.group_id == group_id]
        if job_id is not None:
            where.append(t.c.job_id == job_id)
        if since is not None:
            where.append(t.c.created_at >= sa.literal(since, UtcDateTime()))
        if until is not None:
            where.append(t.c.created_at <= sa.literal(until, UtcDateTime()))
        if delivered is not None:
            where.append(t.c.delivered == delivered)
        return await self._read_page(
            t, where, order_by=t.c.id.desc(), offset=offset, limit=limit, record=alarm_from_row
        )
