"""Orphans: the instances of workers whose stream is gone, held for them, then lost, and lost batch
masters resumed.

A worker whose stream breaks keeps its instances for one heartbeat timeout (they become its *orphans*):
if it reconnects and lists them in ``running_instance_ids`` they stay its own. The ones it does not
list, or all of them when it has not come back by the deadline, are lost: accepted ones fail, ones it
never accepted go back to WAITING. A lost batch-mode instance is submitted again under its id instead,
up to ``MAX_MASTER_RESUMES`` times.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Protocol

from sx.processors import ExecuteMode, InstanceStatus
from sx.processors.engine import ACTIVE_INSTANCE_STATUSES
from sx.scheduler._clock import Clock
from sx.scheduler.dispatch._registry import Assignment, WorkerKey, WorkerSession
from sx.scheduler.dispatch._reports import InstanceReports
from sx.scheduler.dispatch._state import DispatchState, Orphans
from sx.scheduler.store import Instance, InstanceStore, JobStore

__all__ = ["MAX_MASTER_RESUMES", "OrphanStore", "OrphanedInstances"]


class OrphanStore(JobStore, InstanceStore, Protocol):
    """What losing orphans reads: the instance, and its job's execute mode."""


log = logging.getLogger("sx.scheduler.dispatch")

MAX_MASTER_RESUMES = 3
"""Times a batch instance whose master was lost is submitted again before it fails."""


class OrphanedInstances:
    """The instances of gone workers: held until the worker comes back or its deadline passes."""

    def __init__(
        self,
        store: OrphanStore,
        *,
        clock: Clock,
        state: DispatchState,
        reports: InstanceReports,
        heartbeat_timeout: timedelta,
        batch_resume_wait: timedelta,
    ) -> None:
        self._store = store
        self._clock = clock
        self._state = state
        self._reports = reports
        self._heartbeat_timeout = heartbeat_timeout
        self._batch_resume_wait = batch_resume_wait

    def hold_for_workers(self, instances: Iterable[Instance], *, now: datetime) -> None:
        """READY and RUNNING instances found at start: orphans of their workers until they reconnect."""
        state = self._state
        for instance in instances:
            if instance.id in state.owner:
                continue  # a worker that connected before start already claimed it
            key = WorkerKey(instance.namespace, instance.group_id, instance.worker_id)
            orphans = state.orphans.setdefault(
                key, Orphans(address=instance.worker_addr, deadline=now + self._heartbeat_timeout)
            )
            orphans.assigned[instance.id] = Assignment(
                instance.id, instance.job_id, accepted=instance.status is InstanceStatus.RUNNING
            )
            state.owner[instance.id] = key

    def orphan(self, session: WorkerSession, *, deadline: datetime) -> None:
        """Move a gone session's instances aside until the worker reconnects or the deadline passes."""
        if not session.assigned:
            return
        orphans = self._state.orphans.setdefault(
            session.key, Orphans(address=session.address, deadline=deadline)
        )
        orphans.address = session.address
        orphans.deadline = min(orphans.deadline, deadline) if orphans.assigned else deadline
        orphans.assigned.update(session.assigned)
        session.assigned.clear()
        self._state.liveness_wake.set()

    async def lose_overdue(self, *, now: datetime, next_at: datetime) -> datetime:
        """Lose the orphans whose worker did not come back by their deadline; the earlier of ``next_at``
        and the next deadline still ahead."""
        state = self._state
        for key, orphans in list(state.orphans.items()):
            if orphans.deadline > now:
                next_at = min(next_at, orphans.deadline)
                continue
            del state.orphans[key]
            if state.registry.get(key) is None:
                state.delivered.pop(key, None)
            await self.lose(key, orphans)
        return next_at

    async def lose(self, key: WorkerKey, orphans: Orphans) -> None:
        """The worker did not come back for these instances."""
        state = self._state
        for instance_id, assignment in orphans.assigned.items():
            owner = state.owner.get(instance_id)
            if owner is not None and owner != key:
                continue  # another worker took it over meanwhile: it is that worker's now
            state.owner.pop(instance_id, None)
            if assignment.accepted:
                if await self._resume(instance_id, key, orphans.address):
                    continue
                await self._reports.fail(
                    instance_id, f"worker {key.worker_id} ({orphans.address}) lost", system_failure=True
                )
                continue
            # Never accepted: it most likely never ran, so it is submitted again.
            await self._reports.back_to_waiting(instance_id, (InstanceStatus.WAITING, InstanceStatus.READY))

    async def _resume(self, instance_id: int, key: WorkerKey, address: str) -> bool:
        """Submit a lost batch instance again under its id; False when it is not one or was resumed enough."""
        resumes = self._state.resumes
        instance = await self._store.get_instance(instance_id)
        if instance is None or instance.status.finished:
            return False
        job = await self._store.get_job(instance.job_id)
        if job is None or ExecuteMode(job.spec.execute_mode) is not ExecuteMode.BATCH:
            return False
        count = resumes.get(instance_id, 0)
        if count >= MAX_MASTER_RESUMES:
            resumes.pop(instance_id, None)
            return False
        resumes[instance_id] = count + 1
        # Its task file is on the lost master's disk: the instance waits a while for that worker (or
        # another that holds the file) to come back and resume, rather than start over elsewhere.
        state = self._state
        state.task_files.setdefault(instance_id, set()).add(key)
        until = self._clock.now() + self._batch_resume_wait
        state.resume_until[instance_id] = until
        if await self._reports.back_to_waiting(instance_id, ACTIVE_INSTANCE_STATUSES) is None:
            resumes.pop(instance_id, None)
            state.resume_until.pop(instance_id, None)
            return False
        log.warning(
            "instance %d: master %s (%s) lost; submitting it again (resume %d of %d) to a worker holding "
            "its task file, or to any after %s",
            instance_id,
            key.worker_id,
            address,
            count + 1,
            MAX_MASTER_RESUMES,
            until.isoformat(),
        )
        return True
