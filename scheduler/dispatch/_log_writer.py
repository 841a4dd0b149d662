"""Storing the log lines workers ship (``LogBatch`` on their streams) as the instances' online logs.

A stream's reader hands each batch to ``InstanceLogWriter.offer``, which only queues it: a slow store
never holds up reports and heartbeats. One task writes what is queued, one transaction per group at a
time (up to ``WRITE_LINES`` lines each). The queue is bounded (``QUEUE_LINES``): when the store cannot
keep up, a batch that does not fit is dropped and its lines are counted per instance, and that count is
stored as a WARNING line "N lines dropped ..." as soon as there is room again, so the scheduler's memory
stays flat whatever the workers log.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter, deque
from dataclasses import dataclass

from sx.protos.v1 import scheduler_pb2
from sx.scheduler.store import InstanceLogStore, NewLogLines

__all__ = ["QUEUE_LINES", "WRITE_LINES", "InstanceLogWriter"]

log = logging.getLogger("sx.scheduler.dispatch")

QUEUE_LINES = 100_000
"""Lines received and not yet stored above which batches are dropped (and counted)."""
WRITE_LINES = 5_000
"""Lines per store transaction at most (a worker's batch): stored in blocks, they take the (SQLite)
writer a millisecond or two, so the writes of instance reports waiting for it are not held up."""


@dataclass(slots=True)
class _Pending:
    """A worker's batch as it came, made into the store's columns only when stored: one object while
    queued; ``taken``: its first lines already stored."""

    namespace: str
    group_id: str
    worker_id: str
    batch: scheduler_pb2.LogBatch
    taken: int = 0

    def take(self, count: int) -> list[NewLogLines]:
        """Its next ``count`` lines: a run of columns per instance (one, in the usual batch)."""
        start, end = self.taken, self.taken + count
        self.taken = end
        batch = self.batch
        if start == 0 and count == len(batch.messages) and not batch.instance_ids:
            # The usual batch, one instance's lines taken whole: stored as the message it came in,
            # its columns read in place (no Python object per line).
            names = batch.task_names or [batch.task_name] * count
            return [
                NewLogLines(
                    batch.instance_id,
                    self.worker_id,
                    batch.times_ms,
                    batch.levels,
                    batch.messages,
                    batch.task_ids,
                    names,
                    packed=batch.SerializeToString(),
                )
            ]
        task_names = batch.task_names[start:end] if batch.task_names else [batch.task_name] * count
        lines = NewLogLines(
            batch.instance_id,
            self.worker_id,
            batch.times_ms[start:end],
            batch.levels[start:end],
            batch.messages[start:end],
            batch.task_ids[start:end],
            task_names,
        )
        if not batch.instance_ids:
            return [lines]
        # Lines of several instances (standalone runs ending together): split them, in order.
        positions: dict[int, list[int]] = {}
        for position, instance_id in enumerate(batch.instance_ids[start:end]):
            positions.setdefault(instance_id, []).append(position)
        return [_pick(lines, instance_id, picked) for instance_id, picked in positions.items()]


def _pick(lines: NewLogLines, instance_id: int, positions: list[int]) -> NewLogLines:
    """The lines at ``positions`` as ``instance_id``'s."""
    return NewLogLines(
        instance_id,
        lines.worker_id,
        [lines.times_ms[p] for p in positions],
        [lines.levels[p] for p in positions],
        [lines.messages[p] for p in positions],
        [lines.task_ids[p] for p in positions],
        [lines.task_names[p] for p in positions],
    )


class InstanceLogWriter:
    """Queues the workers' log batches and stores them; ``start`` and ``stop`` run its writing task."""

    def __init__(self, store: InstanceLogStore, *, max_lines: int, queue_lines: int = QUEUE_LINES) -> None:
        self._store = store
        self._max_lines = max_lines
        self._queue_lines = queue_lines
        self._queue: deque[_Pending] = deque()
        self._queued = 0
        self._dropped: dict[tuple[str, str, int], int] = {}
        """(namespace, group, instance id) -> lines dropped while the queue was full, not yet stored."""
        self._wake = asyncio.Event()
        self._writing = asyncio.Lock()
        """One pass at a time, so lines are numbered in the order they arrived."""
        self._task: asyncio.Task[None] | None = None
        self.stored = 0
        """Lines stored since the start (the truncation of a full instance log aside)."""

    def offer(self, namespace: str, group_id: str, worker_id: str, batch: scheduler_pb2.LogBatch) -> None:
        """Queue a worker's batch for storing (never waits). A batch whose columns differ in length is
        malformed and dropped whole (a column sent once, as its scalar, is empty)."""
        count = len(batch.messages)
        columns = (batch.times_ms, batch.levels, batch.task_ids)
        shared = (batch.instance_ids, batch.task_names)
        if (
            not count
            or any(len(column) != count for column in columns)
            or any(len(column) not in (0, count) for column in shared)
        ):
            return
        if self._queued + count > self._queue_lines:
            per_instance = Counter(batch.instance_ids) if batch.instance_ids else {batch.instance_id: count}
            for instance_id, dropped in per_instance.items():
                key = (namespace, group_id, instance_id)
                self._dropped[key] = self._dropped.get(key, 0) + dropped
            return
        self._queue.append(_Pending(namespace, group_id, worker_id, batch))
        self._queued += count
        self._wake.set()

    async def flush(self) -> None:
        """Store everything queued now (a final report waits for its instance's lines this way)."""
        await self._write_queued()

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="sx-instance-log-writer")

    async def stop(self) -> None:
        """Store what is queued (one last pass), then stop."""
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        try:
            await self._write_queued()
        except Exception:
            log.exception("storing the last instance log lines failed")

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self._write_queued()
            except asyncio.CancelledError:
                raise
            except Exception:  # the lines taken are lost; the next batches are tried again
                log.exception("storing instance log lines failed")

    async def _write_queued(self) -> None:
        async with self._writing:
            while self._queue or self._dropped:
                namespace, group_id, lines = self._take()
                if lines:
                    self.stored += await self._store.append_instance_logs(
                        namespace, group_id, lines, max_lines=self._max_lines
                    )

    def _take(self) -> tuple[str, str, list[NewLogLines]]:
        """Up to WRITE_LINES queued lines of the first queued group, then its dropped counts."""
        if self._queue:
            namespace, group_id = self._queue[0].namespace, self._queue[0].group_id
        else:
            namespace, group_id, _ = next(iter(self._dropped))
        blocks: list[NewLogLines] = []
        taken = 0
        while self._queue and taken < WRITE_LINES:
            first = self._queue[0]
            if (first.namespace, first.group_id) != (namespace, group_id):
                break
            size = len(first.batch.messages)
            if taken and not first.taken and size > WRITE_LINES - taken:
                break  # a batch is split only when it alone is over WRITE_LINES: whole, it is kept packed
            count = min(size - first.taken, WRITE_LINES - taken)
            blocks += first.take(count)  # a worker's batch may be bigger than a transaction
            taken += count
            self._queued -= count
            if first.taken == size:
                self._queue.popleft()
        return namespace, group_id, blocks + self._dropped_lines(namespace, group_id)

    def _dropped_lines(self, namespace: str, group_id: str) -> list[NewLogLines]:
        now = int(time.time() * 1000)
        notes: list[NewLogLines] = []
        for key in [k for k in self._dropped if k[:2] == (namespace, group_id)]:
            count = self._dropped.pop(key)
            message = f"{count} lines dropped: the scheduler received them faster than it could store them"
            notes.append(NewLogLines(key[2], "", [now], [logging.WARNING], [message], [0], [""]))
        return notes
