"""The instances' online logs (`InstanceLogStore`) on SQL.

Lines are numbered per instance (``seq`` from 1) in the order they are stored. Each append takes the
instance's row lock first (``FOR UPDATE`` on PostgreSQL; SQLite has one writer anyway), so replicas
storing lines of one instance at once never number two lines alike. The line after the last one kept
(``seq`` = max_lines + 1) is the "truncated: N lines dropped" line, updated as more are dropped.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Sequence
from itertools import count, repeat
from operator import itemgetter
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Dialect

from sx.scheduler.store._interfaces import InstanceLogStore
from sx.scheduler.store._records import LogLine, NewLogLine
from sx.scheduler.store.sql import _tables as tables
from sx.scheduler.store.sql._engine import SqlStoreBase
from sx.scheduler.store.sql._rows import check_page, utc_now

__all__ = ["SqlInstanceLogs", "truncated_message"]

_TRUNCATED = re.compile(r"truncated: (\d+) lines dropped")


def truncated_message(dropped: int, kept: int) -> str:
    """The text of an instance's last line once its log reached ``kept`` lines."""
    return f"truncated: {dropped} lines dropped (an instance's log keeps {kept} lines)"


class SqlInstanceLogs(SqlStoreBase, InstanceLogStore):
    """`InstanceLogStore` on SQL."""

    async def append_instance_logs(
        self, namespace: str, group_id: str, lines: Sequence[NewLogLine], *, max_lines: int
    ) -> int:
        if max_lines < 1:
            raise ValueError(f"max_lines={max_lines!r}: must be at least 1")
        if not lines:
            return 0
        instance_ids = set(map(itemgetter(0), lines))  # (instance_id first) no Python code per line
        by_instance: dict[int, list[NewLogLine]] = {}
        if len(instance_ids) == 1:  # the usual batch: lines of one instance
            by_instance[instance_ids.pop()] = list(lines)
        else:
            for line in lines:
                by_instance.setdefault(line.instance_id, []).append(line)

        def work(conn: Connection) -> int:
            return sum(
                _append(conn, namespace, group_id, instance_id, group, max_lines)
                for instance_id, group in sorted(by_instance.items())  # one lock order for all writers
            )

        return await self._write_sync(work)

    async def read_instance_log(
        self,
        instance_id: int,
        *,
        after: int = 0,
        limit: int = 100,
        min_level: int = 0,
        task_id: int | None = None,
        task_name: str | None = None,
    ) -> list[LogLine]:
        check_page(after, limit)
        t = tables.instance_logs
        query = sa.select(t).where(t.c.instance_id == instance_id, t.c.seq > after)
        if min_level > 0:
            query = query.where(t.c.level >= min_level)
        if task_id is not None:
            query = query.where(t.c.task_id == task_id)
        if task_name is not None:
            query = query.where(t.c.task_name == task_name)
        async with self._read() as conn:
            rows = (await conn.execute(query.order_by(t.c.seq).limit(limit))).all()
        return [_line_from_row(row) for row in rows]


def _append(
    conn: Connection, namespace: str, group_id: str, instance_id: int, lines: list[NewLogLine], max_lines: int
) -> int:
    i, t = tables.instances, tables.instance_logs
    owner = (
        sa.select(i.c.id)
        .where(i.c.id == instance_id, i.c.namespace == namespace, i.c.group_id == group_id)
        .with_for_update()
    )
    if conn.execute(owner).first() is None:
        return 0
    last = conn.execute(sa.select(sa.func.max(t.c.seq)).where(t.c.instance_id == instance_id)).scalar() or 0
    room = max(0, max_lines - last)
    kept, dropped = lines[:room], len(lines) - room
    if kept:
        # Straight to the driver's executemany: building SQLAlchemy's parameters costs more per row than
        # the insert itself, and a batch is up to thousands of rows. The rows are the lines' columns
        # zipped again with the numbers, in the INSERT's order, without Python code per row.
        _, times, levels, worker_ids, messages, task_ids, task_names = zip(*kept, strict=True)
        values = list(
            zip(
                repeat(instance_id),
                count(last + 1),
                times,
                levels,
                worker_ids,
                task_ids,
                task_names,
                messages,
            )
        )
        conn.exec_driver_sql(_insert_sql(conn.dialect), values)
    if dropped > 0:
        marker = max_lines + 1
        previous = conn.execute(
            sa.select(t.c.message).where(t.c.instance_id == instance_id, t.c.seq == marker)
        ).scalar()
        if previous is not None:
            found = _TRUNCATED.match(previous)
            total = dropped + (int(found.group(1)) if found else 0)
            conn.execute(
                sa.update(t)
                .where(t.c.instance_id == instance_id, t.c.seq == marker)
                .values(message=truncated_message(total, max_lines), time_ms=_now_ms())
            )
        else:
            mark = NewLogLine(
                instance_id=instance_id,
                time_ms=_now_ms(),
                level=logging.WARNING,
                worker_id="",
                message=truncated_message(dropped, max_lines),
            )
            conn.exec_driver_sql(_insert_sql(conn.dialect), [_values(mark, marker)])
    return len(kept)


_COLUMNS = ("instance_id", "seq", "time_ms", "level", "worker_id", "task_id", "task_name", "message")
"""The order of a line's values in the INSERT (``_values``)."""


@functools.cache
def _insert_sql(dialect: Dialect) -> str:
    """The INSERT of one line in the dialect's own (positional) parameter style, values as ``_values``."""
    t = tables.instance_logs
    compiled = sa.insert(t).values({name: sa.bindparam(name) for name in _COLUMNS}).compile(dialect=dialect)
    if compiled.positiontup is None or tuple(compiled.positiontup) != _COLUMNS:
        raise RuntimeError(f"the {dialect.name} INSERT takes its parameters as {compiled.positiontup!r}")
    return str(compiled)


def _values(line: NewLogLine, seq: int) -> tuple[Any, ...]:
    return (line.instance_id, seq, line.time_ms, line.level, line.worker_id, line.task_id, line.task_name,
            line.message)  # fmt: skip


def _now_ms() -> int:
    return int(utc_now().timestamp() * 1000)


def _line_from_row(row: sa.Row[Any]) -> LogLine:
    return LogLine(
        instance_id=row.instance_id,
        seq=row.seq,
        time_ms=row.time_ms,
        level=row.level,
        worker_id=row.worker_id,
        message=row.message,
        task_id=row.task_id,
        task_name=row.task_name,
    )
