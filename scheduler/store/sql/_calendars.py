"""Calendars (`CalendarStore`) on SQL: one row per calendar, its days a JSON list."""

from __future__ import annotations

import json

import sqlalchemy as sa

from sx.scheduler.store._job_store import CalendarStore
from sx.scheduler.store._records import Calendar
from sx.scheduler.store.sql import _tables as tables
from sx.scheduler.store.sql._engine import SqlStoreBase
from sx.scheduler.store.sql._rows import calendar_from_row

__all__ = ["SqlCalendars"]


class SqlCalendars(SqlStoreBase, CalendarStore):
    """`CalendarStore` on SQL."""

    async def put_calendar(self, calendar: Calendar) -> Calendar:
        t = tables.calendars
        days = json.dumps(sorted(d.isoformat() for d in calendar.days))
        upsert = self._insert(t).values(
            namespace=calendar.namespace, name=calendar.name, description=calendar.description, days=days
        )
        upsert = upsert.on_conflict_do_update(
            index_elements=[t.c.namespace, t.c.name],
            set_={"description": upsert.excluded.description, "days": upsert.excluded.days},
        )
        async with self._write() as conn:
            await conn.execute(upsert)
        return calendar

    async def get_calendar(self, namespace: str, name: str) -> Calendar | None:
        t = tables.calendars
        query = sa.select(t).where(t.c.namespace == namespace, t.c.name == name)
        async with self._read() as conn:
            row = (await conn.execute(query)).one_or_none()
        return None if row is None else calendar_from_row(row)

    async def list_calendars(self, namespace: str) -> list[Calendar]:
        t = tables.calendars
        query = sa.select(t).where(t.c.namespace == namespace).order_by(t.c.name)
        async with self._read() as conn:
            rows = (await conn.execute(query)).all()
        return [calendar_from_row(r) for r in rows]
