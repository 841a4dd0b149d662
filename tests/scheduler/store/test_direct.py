"""Direct statements (`DirectStatement`, the driver's cursor) on SQLite and PostgreSQL: parameters and
results typed as SQLAlchemy would type them, and driver errors raised as SQLAlchemy's."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from sx.scheduler.store.sql import SqlStore
from sx.scheduler.store.sql._direct import DirectStatement
from sx.scheduler.store.sql._tables import UtcDateTime

_metadata = sa.MetaData()
_probe = sa.Table(
    "sx_test_direct",
    _metadata,
    sa.Column("id", sa.Integer(), primary_key=True),
    sa.Column("at", UtcDateTime(), nullable=True),
    sa.Column("flag", sa.Boolean(), nullable=False),
    sa.Column("note", sa.Text(), nullable=False),
)


async def _run(store: SqlStore, work: Any) -> Any:
    async with store.engine.begin() as conn:
        return await conn.run_sync(work)


async def test_values_and_rows_are_typed_as_sqlalchemy_types_them(store: SqlStore) -> None:
    await _run(store, _metadata.create_all)
    t = _probe
    insert = sa.insert(t).values({c.name: sa.bindparam(c.name, type_=c.type) for c in t.c}).returning(*t.c)
    eastern = datetime(2030, 1, 1, 12, 30, 15, 123456, tzinfo=timezone(timedelta(hours=-5)))

    def work(conn: Connection) -> list[Any]:
        direct = DirectStatement.compile(insert, conn.dialect, t.c)
        return direct.run(conn, {"id": 1, "at": eastern, "flag": True, "note": "x"})

    [row] = await _run(store, work)
    assert (row.id, row.at, row.flag, row.note) == (1, eastern.astimezone(UTC), True, "x")
    assert row.at.tzinfo is UTC or row.at.utcoffset() == timedelta(0)
    # What SQLAlchemy reads back is the same.
    async with store.engine.connect() as conn:
        read = (await conn.execute(sa.select(t))).one()
    assert tuple(read) == tuple(row)

    def duplicate(conn: Connection) -> None:
        direct = DirectStatement.compile(insert, conn.dialect, t.c)
        direct.run(conn, {"id": 1, "at": None, "flag": False, "note": "again"})

    with pytest.raises(sa.exc.IntegrityError):
        await _run(store, duplicate)
    await _run(store, _metadata.drop_all)
