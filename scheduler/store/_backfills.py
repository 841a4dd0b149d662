"""Backfills: a job (or a workflow) run again for the fire times its schedule had over a past range of
data times.

A backfill is stored with one row per fire time (``BackfillFire``), planned when it is created. A fire
moves ``pending`` -> ``running`` (its instance exists) -> ``done`` or ``failed``; times that already had
a successful instance may start ``skipped``. Starting fires is one store call that takes the backfill's
row first, so replicas sharing a store start each fire time once and never exceed its concurrency.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Protocol

from sx.scheduler.store._records import (
    Instance,
    NewInstance,
    NewWorkflowInstance,
    Page,
    WorkflowInstance,
)

__all__ = [
    "Backfill",
    "BackfillFire",
    "BackfillProgress",
    "BackfillState",
    "BackfillStore",
    "FireState",
    "NewBackfill",
]


class BackfillState(StrEnum):
    """Where a backfill is: starting fires, stopped by a user, or with every fire ended."""

    RUNNING = "running"
    STOPPED = "stopped"
    FINISHED = "finished"


class FireState(StrEnum):
    """Where one fire time of a backfill is."""

    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    SKIPPED = "skipped"


@dataclass(frozen=True, slots=True)
class BackfillProgress:
    """How many fire times of a backfill are in each state."""

    pending: int = 0
    running: int = 0
    done: int = 0
    failed: int = 0
    skipped: int = 0

    @property
    def total(self) -> int:
        return self.pending + self.running + self.done + self.failed + self.skipped


@dataclass(frozen=True, slots=True)
class NewBackfill:
    """A planned backfill of a job or (``workflow_id``, with ``job_id`` None) a workflow: its fire times
    in schedule order, and those to skip."""

    job_id: int | None
    namespace: str
    group_id: str
    start_time: datetime
    """The range's first data time (inclusive)."""
    end_time: datetime
    """The range's last data time (inclusive)."""
    concurrency: int
    skip_successful: bool
    fire_times: tuple[datetime, ...]
    skipped: frozenset[datetime] = frozenset()
    instance_parameters: str = ""
    workflow_id: int | None = None


@dataclass(frozen=True, slots=True)
class Backfill:
    """A backfill of a job, or of a workflow (``workflow_id`` set, ``job_id`` None)."""

    id: int
    job_id: int | None
    namespace: str
    group_id: str
    start_time: datetime
    end_time: datetime
    concurrency: int
    skip_successful: bool
    instance_parameters: str
    state: BackfillState
    created_at: datetime
    updated_at: datetime
    progress: BackfillProgress
    workflow_id: int | None = None


@dataclass(frozen=True, slots=True)
class BackfillFire:
    """One fire time; ``instance_id`` is its instance (a workflow backfill's: its workflow instance)."""

    backfill_id: int
    schedule_time: datetime
    state: FireState
    instance_id: int | None


class BackfillStore(Protocol):
    """Backfills and their fire times."""

    @abstractmethod
    async def create_backfill(self, new: NewBackfill) -> Backfill:
        """Store a RUNNING backfill with its fire times (PENDING, or SKIPPED when in ``skipped``)."""

    @abstractmethod
    async def get_backfill(self, backfill_id: int) -> Backfill | None: ...

    @abstractmethod
    async def list_backfills(
        self,
        namespace: str,
        group_id: str,
        *,
        job_id: int | None = None,
        offset: int = 0,
        limit: int = 20,
    ) -> Page[Backfill]:
        """A group's backfills, newest first."""

    @abstractmethod
    async def running_backfill_ids(self, *, limit: int = 1000) -> list[int]:
        """Ids of the RUNNING backfills, oldest first."""

    @abstractmethod
    async def set_backfill_state(
        self, backfill_id: int, state: BackfillState, *, only_if: BackfillState
    ) -> Backfill | None:
        """Compare-and-set the state; None when missing or not in ``only_if``."""

    @abstractmethod
    async def list_backfill_fires(
        self,
        backfill_id: int,
        *,
        states: Sequence[FireState] | None = None,
        offset: int = 0,
        limit: int = 100,
    ) -> Page[BackfillFire]:
        """The backfill's fire times in schedule order, optionally only these states."""

    @abstractmethod
    async def start_backfill_fires(
        self, backfill_id: int, make: Callable[[datetime], NewInstance], now: datetime
    ) -> list[Instance]:
        """In one transaction that first takes the backfill's row: while it is RUNNING, start its
        earliest PENDING fires, as many as its concurrency leaves room for beside its RUNNING ones,
        each with the instance ``make(schedule_time)``. Returns the instances created, in order."""

    @abstractmethod
    async def start_workflow_backfill_fires(
        self, backfill_id: int, make: Callable[[datetime], NewWorkflowInstance], now: datetime
    ) -> list[WorkflowInstance]:
        """``start_backfill_fires`` for a workflow backfill: each fire gets the workflow instance
        ``make(schedule_time)``."""

    @abstractmethod
    async def settle_backfill_fire(
        self,
        backfill_id: int,
        schedule_time: datetime,
        *,
        only_if_instance: int,
        state: FireState,
        instance_id: int | None = None,
    ) -> bool:
        """Move a RUNNING fire whose instance is ``only_if_instance`` to ``state`` (and, when given, to
        ``instance_id``, e.g. its instance's retry); False when it was moved already."""

    @abstractmethod
    async def successful_data_times(self, job_id: int, start: datetime, end: datetime) -> set[datetime]:
        """Data times in ``[start, end]`` of the job's instances that succeeded."""

    @abstractmethod
    async def successful_workflow_times(
        self, workflow_id: int, start: datetime, end: datetime
    ) -> set[datetime]:
        """Schedule times in ``[start, end]`` of the workflow's instances that succeeded."""
