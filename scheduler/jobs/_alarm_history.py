"""The alarm history as callers read it: a group's recorded alarms, filtered and paged."""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from sx.scheduler.jobs._lookup import page_offset, require_group
from sx.scheduler.store import AccessStore, Alarm, AlarmStore, Page

__all__ = ["AlarmHistory", "AlarmHistoryStore"]


class AlarmHistoryStore(AccessStore, AlarmStore, Protocol):
    """What the alarm history reads."""


class AlarmHistory:
    """Pages of a group's alarms (what `AlarmRouter` recorded), newest first."""

    def __init__(self, store: AlarmHistoryStore) -> None:
        self.store = store

    async def list_alarms(
        self,
        namespace: str,
        group_id: str,
        *,
        job_id: int | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        delivered: bool | None = None,
        page_num: int = 1,
        page_size: int = 20,
    ) -> Page[Alarm]:
        """NotFound when the namespace or group does not exist; a job id of another group, or of a
        deleted job, simply matches nothing (its alarms outlive it)."""
        await require_group(self.store, namespace, group_id)
        return await self.store.page_alarms(
            namespace,
            group_id,
            job_id=job_id,
            since=since,
            until=until,
            delivered=delivered,
            offset=page_offset(page_num, page_size),
            limit=page_size,
        )
