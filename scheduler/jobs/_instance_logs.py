"""An instance's online log as callers read it: lines after an offset, filtered, and followed.

Following is a long poll on the store, so it works on any scheduler replica sharing it: ``read`` with
``wait`` returns as soon as lines past the offset are stored, or when ``wait`` seconds passed, or when
the log is complete. A worker sends an instance's lines before its final report, and the scheduler
stores them before it applies the report; lines of other workers (map subtasks) may still be on their
way, so a log counts as complete only ``LOG_SETTLE`` seconds after its instance finished.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import timedelta
from typing import Protocol

from sx.scheduler._clock import Clock
from sx.scheduler.store import Instance, InstanceLogStore, LogLine

__all__ = ["LOG_SETTLE", "InstanceLog", "InstanceLogs", "InstanceLookup"]

LOG_SETTLE = timedelta(seconds=2)
"""How long after its instance finished lines of other workers may still arrive (their buffers ship
every 0.2 s; the store queue)."""
POLL = 0.25
"""Seconds between looks at the store while following."""


class InstanceLookup(Protocol):
    """Finds an instance of a job of a group, raising NotFound otherwise (the job service)."""

    async def get_instance(
        self, namespace: str | None, group_id: str | None, job_id: int, instance_id: int
    ) -> Instance: ...


@dataclass(frozen=True, slots=True)
class InstanceLog:
    """Some lines of an instance's log: ``next_offset`` is where the next read goes on (the last
    line's ``seq``, or the offset read from when there was none); ``complete`` says no line will
    follow (the instance finished a while ago)."""

    lines: list[LogLine]
    next_offset: int
    complete: bool


class InstanceLogs:
    """Reads instances' online logs (what ``InstanceLogWriter`` stored)."""

    def __init__(self, store: InstanceLogStore, *, jobs: InstanceLookup, clock: Clock) -> None:
        self.store = store
        self._jobs = jobs
        self._clock = clock

    async def read(
        self,
        namespace: str,
        group_id: str,
        job_id: int,
        instance_id: int,
        *,
        offset: int = 0,
        limit: int = 100,
        min_level: int = 0,
        task_id: int | None = None,
        task_name: str | None = None,
        wait: float = 0.0,
    ) -> InstanceLog:
        """The lines after ``offset`` (a line's ``seq``: lines are numbered from 1 per instance).
        With ``wait`` > 0, waits up to that many seconds for one. NotFound for an unknown instance."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while True:
            instance = await self._jobs.get_instance(namespace, group_id, job_id, instance_id)
            complete = self._complete(instance)
            lines = await self.store.read_instance_log(
                instance_id,
                after=offset,
                limit=limit,
                min_level=min_level,
                task_id=task_id,
                task_name=task_name,
            )
            if lines or complete or loop.time() >= deadline:
                next_offset = lines[-1].seq if lines else offset
                # Complete only once every line is read: a full page may have more behind it.
                return InstanceLog(
                    lines=lines, next_offset=next_offset, complete=complete and len(lines) < limit
                )
            await asyncio.sleep(min(POLL, max(0.0, deadline - loop.time())))

    def _complete(self, instance: Instance) -> bool:
        if not instance.status.finished:
            return False
        ended = instance.end_time or instance.created_at
        return self._clock.now() - ended >= LOG_SETTLE
