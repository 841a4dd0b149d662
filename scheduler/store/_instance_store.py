"""`InstanceStore`, `InstanceLogStore` and `AlarmStore`: job instances and what they leave behind, their
online logs and the alarms raised about them (timeouts and failures)."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Protocol

from sx.processors import InstanceStatus, TriggerType
from sx.scheduler.store._records import (
    Alarm,
    Fence,
    Instance,
    InstanceChange,
    LogLine,
    NewInstance,
    NewLogLines,
    Page,
)

__all__ = ["AlarmStore", "InstanceLogStore", "InstanceStore"]


class InstanceStore(Protocol):
    """Job instances: created by triggers, moved through their statuses by dispatch, retried,
    timed out and pruned."""

    @abstractmethod
    async def create_instance(self, new: NewInstance) -> Instance: ...

    @abstractmethod
    async def get_instance(self, instance_id: int) -> Instance | None: ...

    @abstractmethod
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
        """A job's instances, newest first; since/until bound schedule_time."""

    @abstractmethod
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
        """A group's instances across its jobs (or one job's), newest first; each filter given keeps
        only the instances matching it; since/until bound schedule_time."""

    @abstractmethod
    async def instances_with_status(
        self,
        statuses: Sequence[InstanceStatus],
        *,
        limit: int = 1000,
        group_id: str | None = None,
        namespace: str | None = None,
    ) -> list[Instance]:
        """Instances in these statuses across all jobs (or one namespace, one group), oldest first
        (dispatch, recovery, timeouts)."""

    @abstractmethod
    async def update_instance(
        self,
        instance_id: int,
        change: InstanceChange,
        *,
        only_if_status: Sequence[InstanceStatus] | None = None,
        fence: Fence | None = None,
    ) -> Instance | None:
        """Apply a change; with only_if_status, only when the instance is in one of those statuses
        (compare-and-set). Returns the updated instance, or None when it is missing or the guard failed.
        With ``fence``, raises `FencedError` (writing nothing) unless the fence's tokens hold the lease
        of the instance's group (a store that alone writes its database, which no other scheduler
        shares, need not check)."""

    async def update_instances(
        self,
        changes: Sequence[tuple[int, InstanceChange]],
        *,
        only_if_status: Sequence[InstanceStatus] | None = None,
        fence: Fence | None = None,
    ) -> dict[int, Instance | None]:
        """``update_instance`` for many instances at once (one transaction where the store can), each
        with the same guard and fence; maps every id to its updated instance or None."""
        return {
            instance_id: await self.update_instance(
                instance_id, change, only_if_status=only_if_status, fence=fence
            )
            for instance_id, change in changes
        }

    @abstractmethod
    async def count_active_instances(self, job_id: int) -> int:
        """Instances of the job that are waiting, ready or running (for maxConcurrency); backfill
        instances (trigger type 2) are left out: a backfill keeps its own concurrency."""

    @abstractmethod
    async def active_instances_below(self, job_id: int, limit: int) -> bool:
        """Whether the job has fewer than ``limit`` active instances, counted as in
        ``count_active_instances`` (a store may answer without counting them all)."""

    @abstractmethod
    async def count_active_instances_by_job(self, job_ids: Sequence[int]) -> dict[int, int]:
        """Active instances of many jobs in one query (the trigger engine's maxConcurrency check),
        backfill instances left out as in ``count_active_instances``; jobs with none may be left out."""

    @abstractmethod
    async def find_retry(self, instance_id: int) -> Instance | None:
        """The instance created as the retry of this one, if any."""

    @abstractmethod
    async def prune_instances(self, job_id: int, keep: int) -> int:
        """Delete the job's finished instances beyond the newest ``keep``; returns how many.
        ``keep`` of 0 or less keeps them all (deletes nothing)."""


class InstanceLogStore(Protocol):
    """The instances' online logs: the lines workers ship, bounded per instance, gone with the instance."""

    @abstractmethod
    async def append_instance_logs(
        self, namespace: str, group_id: str, lines: Sequence[NewLogLines], *, max_lines: int
    ) -> int:
        """Store ``lines`` (of any instances) in one transaction, numbered in order after each
        instance's last line; returns how many lines were stored (ValueError for columns of different
        lengths). Lines of an instance that does not exist
        (any more) or is not of this group are dropped. An instance keeps at most ``max_lines`` lines:
        what comes later is counted in one line after them, "truncated: N lines dropped"."""

    @abstractmethod
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
        """The instance's lines with ``seq`` above ``after``, in order: at most ``limit``, at
        ``min_level`` or above, of one subtask (id, name) when given."""


class AlarmStore(Protocol):
    """The record of every alarm raised (timeouts and failures) and whether it was delivered."""

    @abstractmethod
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
    ) -> Alarm: ...

    @abstractmethod
    async def list_alarms(self, *, job_id: int | None = None, limit: int = 100) -> list[Alarm]: ...

    @abstractmethod
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
        """A group's alarms, newest first, with ``since <= created_at <= until`` (the alarm history)."""
