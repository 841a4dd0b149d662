"""The instances' online logs (`InstanceLogStore`) on SQL.

Lines are numbered per instance (``seq`` from 1) in the order they are stored, and kept in blocks: a
row holds consecutive lines one worker shipped (``first_seq`` .. ``first_seq + line_count - 1``). A row
per line made storing a line cost more than logging it; a block costs one insert for up to
``WRITE_LINES`` lines, and reading decodes the blocks that hold the page asked for (an instance keeps a
bounded number of lines, 10,000 by default).

A block is stored in one of two forms. A worker's whole batch of one instance's lines (the usual case)
is kept as the ``LogBatch`` message it came in (``packed``): nothing is decoded or encoded per line, and
encoding the columns again as JSON had cost the scheduler more than all the rest of storing them. Any
other block (part of a batch, lines the scheduler writes itself, blocks from before migration 0011) is
its columns as one JSON object (``lines``).

Each append takes the instance's row lock first (``FOR UPDATE`` on PostgreSQL; SQLite has one writer
anyway), so replicas storing lines of one instance at once never number two lines alike. The line
after the last one kept (``seq`` = max_lines + 1) is the "truncated: N lines dropped" line, a block of
its own, rewritten as more are dropped.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Iterable, Iterator, Sequence
from itertools import repeat
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from sx.protos.v1 import scheduler_pb2
from sx.scheduler.store._instance_store import InstanceLogStore
from sx.scheduler.store._records import LogLine, NewLogLines
from sx.scheduler.store.sql import _tables as tables
from sx.scheduler.store.sql._engine import SqlStoreBase
from sx.scheduler.store.sql._rows import check_page

__all__ = ["SqlInstanceLogs", "decode_block", "encode_block", "truncated_message"]

_TRUNCATED = re.compile(r"truncated: (\d+) lines dropped")
_READ_BLOCKS = 16
"""Blocks fetched per query while reading: a page of the usual size is within the first one or two."""


def truncated_message(dropped: int, kept: int) -> str:
    """The text of an instance's last line once its log reached ``kept`` lines."""
    return f"truncated: {dropped} lines dropped (an instance's log keeps {kept} lines)"


def encode_block(lines: NewLogLines, start: int = 0, end: int | None = None) -> str:
    """The JSON of lines ``start:end``: an object of columns ("t" times, "l" levels, "k" task ids, "n"
    task names, "m" messages); a column whose lines all hold one value is that value, once."""
    columns: dict[str, Any] = {"t": list(lines.times_ms[start:end]), "m": list(lines.messages[start:end])}
    for key, values in (
        ("l", lines.levels[start:end]),
        ("k", lines.task_ids[start:end]),
        ("n", lines.task_names[start:end]),
    ):
        columns[key] = values[0] if len(set(values)) == 1 else list(values)
    return json.dumps(columns, ensure_ascii=False, separators=(",", ":"))


def decode_block(
    instance_id: int, first_seq: int, worker_id: str, encoded: str | None, packed: bytes | None = None
) -> Iterator[LogLine]:
    """The lines of a stored block (its JSON ``encoded`` columns or its ``packed`` message), in order."""
    if packed is not None:
        batch = scheduler_pb2.LogBatch.FromString(packed)
        names: Iterable[str] = batch.task_names or repeat(batch.task_name, len(batch.messages))
        rows = zip(batch.times_ms, batch.levels, batch.task_ids, names, batch.messages, strict=False)
    else:
        if encoded is None:
            raise ValueError(f"instance {instance_id}: the log block at line {first_seq} holds nothing")
        columns = json.loads(encoded)
        messages: list[str] = columns["m"]
        count = len(messages)

        def column(key: str) -> Any:
            value = columns[key]
            return value if isinstance(value, list) else repeat(value, count)

        rows = zip(columns["t"], column("l"), column("k"), column("n"), messages, strict=False)
    for offset, (time_ms, level, task_id, task_name, message) in enumerate(rows):
        yield LogLine(instance_id, first_seq + offset, time_ms, level, worker_id, message, task_id, task_name)


class SqlInstanceLogs(SqlStoreBase, InstanceLogStore):
    """`InstanceLogStore` on SQL."""

    async def append_instance_logs(
        self, namespace: str, group_id: str, lines: Sequence[NewLogLines], *, max_lines: int
    ) -> int:
        if max_lines < 1:
            raise ValueError(f"max_lines={max_lines!r}: must be at least 1")
        by_instance: dict[int, list[NewLogLines]] = {}
        for block in lines:
            block.check()
            if len(block):
                by_instance.setdefault(block.instance_id, []).append(block)
        if not by_instance:
            return 0

        def work(conn: Connection) -> int:
            return sum(
                _append(conn, namespace, group_id, instance_id, blocks, max_lines)
                for instance_id, blocks in sorted(by_instance.items())  # one lock order for all writers
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
        b = tables.instance_log_blocks
        # From the block holding line after + 1 (the last one starting at or before it) on.
        holding = (
            sa.select(sa.func.max(b.c.first_seq))
            .where(b.c.instance_id == instance_id, b.c.first_seq <= after + 1)
            .scalar_subquery()
        )
        query = (
            sa.select(b.c.first_seq, b.c.worker_id, b.c.lines, b.c.packed)
            .where(b.c.instance_id == instance_id, b.c.first_seq >= sa.func.coalesce(holding, 0))
            .order_by(b.c.first_seq)
            .limit(_READ_BLOCKS)
        )
        if min_level > 0:
            query = query.where(b.c.max_level >= min_level)
        found: list[LogLine] = []
        next_first = 0
        async with self._read() as conn:
            while len(found) < limit:
                rows = (await conn.execute(query.where(b.c.first_seq >= next_first))).all()
                for first_seq, worker_id, encoded, packed in rows:
                    for line in decode_block(instance_id, first_seq, worker_id, encoded, packed):
                        if (
                            line.seq > after
                            and line.level >= min_level
                            and (task_id is None or line.task_id == task_id)
                            and (task_name is None or line.task_name == task_name)
                        ):
                            found.append(line)
                            if len(found) == limit:
                                return found
                if len(rows) < _READ_BLOCKS:
                    break
                next_first = rows[-1][0] + 1
        return found


def _append(
    conn: Connection,
    namespace: str,
    group_id: str,
    instance_id: int,
    blocks: list[NewLogLines],
    max_lines: int,
) -> int:
    i, b = tables.instances, tables.instance_log_blocks
    owner = (
        sa.select(i.c.id)
        .where(i.c.id == instance_id, i.c.namespace == namespace, i.c.group_id == group_id)
        .with_for_update()
    )
    if conn.execute(owner).first() is None:
        return 0
    last_block = conn.execute(
        sa.select(b.c.first_seq, b.c.line_count)
        .where(b.c.instance_id == instance_id)
        .order_by(b.c.first_seq.desc())
        .limit(1)
    ).first()
    last = last_block.first_seq + last_block.line_count - 1 if last_block else 0
    rows: list[dict[str, Any]] = []
    dropped = 0
    for block in blocks:
        kept = min(len(block), max(0, max_lines - last))
        dropped += len(block) - kept
        if kept:
            whole = kept == len(block) and block.packed is not None
            rows.append(
                {
                    "instance_id": instance_id,
                    "first_seq": last + 1,
                    "line_count": kept,
                    "max_level": max(block.levels[:kept]),
                    "worker_id": block.worker_id,
                    "lines": None if whole else encode_block(block, 0, kept),
                    "packed": block.packed if whole else None,
                }
            )
            last += kept
    if rows:
        conn.execute(sa.insert(b), rows)
    if dropped > 0:
        _count_truncated(conn, instance_id, dropped, max_lines)
    return sum(row["line_count"] for row in rows)


def _count_truncated(conn: Connection, instance_id: int, dropped: int, max_lines: int) -> None:
    """Add ``dropped`` to the count in the instance's "truncated" line (made on the first drop)."""
    b = tables.instance_log_blocks
    marker = max_lines + 1
    where = (b.c.instance_id == instance_id, b.c.first_seq == marker)
    previous = conn.execute(sa.select(b.c.lines).where(*where)).scalar()
    if previous is not None:
        found = _TRUNCATED.match(json.loads(previous)["m"][0])
        dropped += int(found.group(1)) if found else 0
    now_ms = int(time.time() * 1000)
    message = truncated_message(dropped, max_lines)
    encoded = encode_block(NewLogLines(instance_id, "", [now_ms], [logging.WARNING], [message], [0], [""]))
    if previous is not None:
        conn.execute(sa.update(b).where(*where).values(lines=encoded))
    else:
        conn.execute(
            sa.insert(b).values(
                instance_id=instance_id,
                first_seq=marker,
                line_count=1,
                max_level=logging.WARNING,
                worker_id="",
                lines=encoded,
            )
        )
