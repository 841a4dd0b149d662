"""The dispatch loop: submitting due WAITING instances round robin, and recording them READY.

Each pass takes the due instances of the waiting queue in schedule order and, for each, submits it to
the next worker that serves its processor and has room, leaves it waiting (workers at capacity, or none
yet within the no-worker grace) or fails it (its job is gone, every worker refused it, no worker came).
The pass's submissions are then recorded READY in one store call. Every ``waiting_rescan`` the store's
WAITING instances are read again, for any whose creator could not hand it over.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from sx.processors._enums import InstanceStatus
from sx.protos.v1 import scheduler_pb2
from sx.scheduler._clock import Clock
from sx.scheduler.dispatch._instance_spec import build_instance_spec, processor_of, wants_worker_list
from sx.scheduler.dispatch._registry import Assignment, WorkerSession
from sx.scheduler.dispatch._reports import InstanceReports
from sx.scheduler.dispatch._state import RECOVERY_LIMIT, DispatchState, Waiting, kill_message
from sx.scheduler.store import InstanceChange, InstanceStore, Job, JobStore

__all__ = ["Submission", "SubmissionStore"]


class SubmissionStore(JobStore, InstanceStore, Protocol):
    """What submission reads and writes: waiting instances, their jobs, the READY writes."""


log = logging.getLogger("sx.scheduler.dispatch")

# Loops with nothing scheduled still look around this often (cheap; guards against a missed wake).
_IDLE = timedelta(seconds=60)


@dataclass(frozen=True, slots=True)
class _Submitted:
    """An instance sent to a worker in this dispatch pass, its READY write still to make."""

    instance_id: int
    job_id: int
    session: WorkerSession


class Submission:
    """Hands the waiting queue's due instances to workers; ``dispatch_loop`` runs it until cancelled."""

    def __init__(
        self,
        store: SubmissionStore,
        *,
        clock: Clock,
        state: DispatchState,
        reports: InstanceReports,
        waiting_rescan: timedelta,
    ) -> None:
        self._store = store
        self._clock = clock
        self._state = state
        self._reports = reports
        self._waiting_rescan = waiting_rescan
        self._next_rescan = clock.now() + waiting_rescan

    def reset_rescan(self, now: datetime) -> None:
        """The next rescan of the store's WAITING instances comes one period after ``now``."""
        self._next_rescan = now + self._waiting_rescan

    async def dispatch_loop(self) -> None:
        wake = self._state.dispatch_wake
        while True:
            wake.clear()
            try:
                if self._clock.now() >= self._next_rescan:
                    await self._rescan_waiting()
                next_at = min(await self._dispatch_due(), self._next_rescan)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("dispatch pass failed; retrying")
                next_at = self._clock.now() + timedelta(seconds=1)
            await self._clock.sleep_until(next_at, wake)

    async def _rescan_waiting(self) -> None:
        """Queue the store's WAITING instances this dispatcher does not know (their creator's hand-over
        failed); the ones it knows are skipped by ``DispatchState.enqueue``."""
        state = self._state
        self._next_rescan = self._clock.now() + self._waiting_rescan
        found = await self._store.instances_with_status([InstanceStatus.WAITING], limit=RECOVERY_LIMIT)
        fresh = [i for i in found if i.id not in state.waiting and i.id not in state.owner]
        for instance in fresh:
            state.enqueue(instance)
        if fresh:
            log.warning("%d waiting instance(s) found in the store and queued for dispatch", len(fresh))

    async def _dispatch_due(self) -> datetime:
        """Submit every due waiting instance that a worker can take; returns when to look again."""
        now = self._clock.now()
        next_at = now + _IDLE
        due: list[Waiting] = []
        for entry in self._state.waiting.values():
            if entry.due <= now:
                due.append(entry)
            else:
                next_at = min(next_at, entry.due)
        due.sort(key=lambda e: (e.due, e.instance.id))
        jobs: dict[int, Job | None] = {}
        submitted: list[_Submitted] = []
        try:
            next_at = await self._submit_due(due, jobs, now, next_at, submitted)
        finally:
            await self._mark_ready(submitted)
        return next_at

    async def _submit_due(
        self,
        due: list[Waiting],
        jobs: dict[int, Job | None],
        now: datetime,
        next_at: datetime,
        submitted: list[_Submitted],
    ) -> datetime:
        waiting = self._state.waiting
        for entry in due:
            instance = entry.instance
            if waiting.get(instance.id) is not entry:
                continue  # killed or claimed during an await of this pass
            if instance.job_id not in jobs:
                jobs[instance.job_id] = await self._store.get_job(instance.job_id)
            job = jobs[instance.job_id]
            if waiting.get(instance.id) is not entry:
                continue
            if job is None:
                del waiting[instance.id]
                await self._reports.fail(
                    instance.id, f"job {instance.job_id} no longer exists", system_failure=False
                )
                continue
            wait_until = await self._submit(entry, job, now, submitted)
            if wait_until is not None:
                next_at = min(next_at, wait_until)
        return next_at

    async def _submit(
        self, entry: Waiting, job: Job, now: datetime, submitted: list[_Submitted]
    ) -> datetime | None:
        """Submit one instance (its READY write joins ``submitted``), fail it, or leave it waiting
        (returning when to look again)."""
        state = self._state
        registry = state.registry
        instance = entry.instance
        processor = processor_of(job)
        refused = state.refused.get(instance.id, {})
        session = registry.pick(instance.namespace, instance.group_id, processor, exclude=frozenset(refused))
        if session is None:
            eligible = registry.eligible(instance.namespace, instance.group_id, processor)
            remaining = [s for s in eligible if s.worker_id not in refused]
            if remaining:
                return None  # workers are at capacity: a finishing instance wakes the loop
            if refused:
                del state.waiting[instance.id]
                reasons = "; ".join(f"{wid}: {msg}" for wid, msg in sorted(refused.items()))
                await self._reports.fail(
                    instance.id, f"refused by every worker: {reasons}", system_failure=False
                )
                return None
            if now < entry.deadline:
                return entry.deadline
            del state.waiting[instance.id]
            where = f"group {instance.group_id} of namespace {instance.namespace}"
            if processor and registry.live(instance.namespace, instance.group_id):
                result = f"no worker online in {where} serves processor {processor}"
            else:
                result = f"no worker online in {where}"
            await self._reports.fail(instance.id, result, system_failure=False)
            return None
        del state.waiting[instance.id]
        workers: list[tuple[str, str]] = []
        if wants_worker_list(job):
            eligible = registry.eligible(instance.namespace, instance.group_id, processor)
            workers = [(s.worker_id, s.address) for s in eligible]
        spec = build_instance_spec(job, instance, workers=workers)
        session.assigned[instance.id] = Assignment(instance.id, job.id)
        state.owner[instance.id] = session.key
        session.send(scheduler_pb2.SchedulerMessage(submit=scheduler_pb2.SubmitInstance(instance=spec)))
        log.info("instance %d of job %d submitted to worker %s", instance.id, job.id, session.worker_id)
        submitted.append(_Submitted(instance.id, job.id, session))
        return None

    async def _mark_ready(self, submitted: list[_Submitted]) -> None:
        """Record the pass's submissions as READY in one store call (a write per instance made a pass
        over many due instances as slow as that many transactions). The worker's reply may already have
        moved an instance on; one that ended meanwhile is killed on its worker."""
        if not submitted:
            return
        changes = [
            (
                s.instance_id,
                InstanceChange(
                    status=InstanceStatus.READY,
                    worker_id=s.session.worker_id,
                    worker_addr=s.session.address,
                    executor=s.session.executor,
                ),
            )
            for s in submitted
        ]
        updated = await self._store.update_instances(
            changes, only_if_status=(InstanceStatus.WAITING, InstanceStatus.READY)
        )
        for s in submitted:
            if updated.get(s.instance_id) is not None:
                continue
            assignment = s.session.assigned.get(s.instance_id)
            if assignment is None or assignment.accepted:
                continue  # already ended here, or accepted: the RUNNING write made this same check
            current = await self._store.get_instance(s.instance_id)
            if (current is None or current.status.finished) and s.instance_id in s.session.assigned:
                self._state.release(s.instance_id)
                self._state.forget(s.instance_id)
                s.session.send(kill_message(s.instance_id, s.job_id, "the instance has already finished"))
