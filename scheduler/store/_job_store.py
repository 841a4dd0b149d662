"""`JobStore` and `CalendarStore`: jobs with their persisted next fire time (the trigger engine's view
of them), and the named calendars of days their cron schedules may include or exclude."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from datetime import datetime
from typing import Protocol

from sx.processors import ExecuteMode, JobSpec, TimeType
from sx.scheduler.store._records import Calendar, Fire, Instance, Job, Page

__all__ = ["CalendarStore", "JobStore"]


class JobStore(Protocol):
    """Jobs and the trigger engine's view of them: the persisted next fire time, the due jobs, and
    claiming their fires."""

    @abstractmethod
    async def create_job(
        self,
        *,
        namespace: str,
        group_id: str,
        spec: JobSpec,
        enabled: bool,
        managed: bool,
        next_fire_time: datetime | None,
        namespace_source: str | None = None,
    ) -> Job:
        """Raises DuplicateError when the group has a job of that name."""

    @abstractmethod
    async def get_job(self, job_id: int) -> Job | None: ...

    @abstractmethod
    async def find_job(self, namespace: str, group_id: str, name: str) -> Job | None: ...

    @abstractmethod
    async def list_jobs(
        self,
        namespace: str,
        group_id: str,
        *,
        name_contains: str | None = None,
        enabled: bool | None = None,
        time_type: TimeType | None = None,
        execute_mode: ExecuteMode | None = None,
        offset: int = 0,
        limit: int = 50,
    ) -> Page[Job]:
        """Jobs of a group ordered by id; each filter given keeps only the jobs matching it."""

    @abstractmethod
    async def update_job(
        self,
        job_id: int,
        *,
        spec: JobSpec | None = None,
        enabled: bool | None = None,
        managed: bool | None = None,
        next_fire_time: datetime | None = None,
        clear_next_fire_time: bool = False,
    ) -> Job:
        """Raises NotFoundError, or DuplicateError when a rename collides."""

    @abstractmethod
    async def delete_job(self, job_id: int) -> bool:
        """Delete a job and its instances' history; False when it did not exist."""

    # -- the trigger engine ----------------------------------------------------------------------------------
    @abstractmethod
    async def next_due_time(self) -> datetime | None:
        """The earliest next_fire_time among enabled jobs (an index look-up, not a scan)."""

    @abstractmethod
    async def due_jobs(self, now: datetime, limit: int) -> list[Job]:
        """Enabled jobs whose next_fire_time <= now, earliest first."""

    @abstractmethod
    async def claim_fires(self, fires: Sequence[Fire]) -> list[Instance | None]:
        """Atomically, per fire: move the job's next_fire_time from ``due`` to the new value only if it
        still is ``due`` (another replica may have claimed it), and create the fire's instance. Returns,
        in order, the created instance, or None where the claim lost or no instance was asked for."""


class CalendarStore(Protocol):
    """Named calendars of days (a cron schedule may include or exclude them)."""

    @abstractmethod
    async def put_calendar(self, calendar: Calendar) -> Calendar:
        """Create or replace a calendar."""

    @abstractmethod
    async def get_calendar(self, namespace: str, name: str) -> Calendar | None: ...

    @abstractmethod
    async def list_calendars(self, namespace: str) -> list[Calendar]: ...
