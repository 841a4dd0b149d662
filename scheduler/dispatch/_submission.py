"""The dispatch loop: submitting due WAITING instances round robin, and recording them READY.

Each pass takes the due instances of the waiting queue in schedule order and, for each, submits it to
the next worker that serves its processor and has room, leaves it waiting (workers at capacity, or none
yet within the no-worker grace) or fails it (its job is gone, every worker refused it, no worker came).
The pass's submissions are recorded READY in one store call and only then sent, so a scheduler killed
at any step of a pass never leaves an instance that a worker runs marked WAITING (which its restart
would send again): it finds it READY and gives it back to the worker that lists it as running, or
submits it again when no worker does. Every ``waiting_rescan`` the store's WAITING instances are read
again, for any whose creator could not hand it over.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from sx.processors import InstanceStatus
from sx.processors.engine import describe_exception, shorten_head
from sx.protos.v1 import scheduler_pb2
from sx.scheduler._clock import Clock
from sx.scheduler._crash_points import crash_point
from sx.scheduler.dispatch._instance_spec import build_instance_spec, processor_of, wants_worker_list
from sx.scheduler.dispatch._ownership import GroupOwnership
from sx.scheduler.dispatch._registry import Assignment, WorkerSession
from sx.scheduler.dispatch._reports import InstanceReports
from sx.scheduler.dispatch._state import RECOVERY_LIMIT, DispatchState, Waiting
from sx.scheduler.store import FencedError, InstanceChange, InstanceStore, Job, JobStore

__all__ = ["Submission", "SubmissionStore"]


class SubmissionStore(JobStore, InstanceStore, Protocol):
    """What submission reads and writes: waiting instances, their jobs, the READY writes."""


log = logging.getLogger("sx.scheduler.dispatch")

# Loops with nothing scheduled still look around this often (cheap; guards against a missed wake).
_IDLE = timedelta(seconds=60)


@dataclass(frozen=True, slots=True)
class _Wait:
    """An instance stays waiting: ``until`` is when to look at it again (None: when a report wakes the
    loop); ``blocks`` when what holds it holds the rest of its job's queue too."""

    until: datetime | None
    blocks: bool


_FULL = _Wait(None, blocks=True)
"""The workers that may take it are all at capacity."""


@dataclass(frozen=True, slots=True)
class _Submitted:
    """An instance assigned to a worker in this dispatch pass: recorded READY, then sent."""

    entry: Waiting
    job_id: int
    session: WorkerSession
    message: scheduler_pb2.SchedulerMessage

    @property
    def instance_id(self) -> int:
        return self.entry.instance.id


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
        ownership: GroupOwnership,
    ) -> None:
        self._store = store
        self._ownership = ownership
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
            except FencedError as exc:
                # The lease of a group was lost: the ownership check forgets the group's instances.
                log.warning("dispatch pass refused: %s", exc)
                self._ownership.suspect()
                next_at = self._clock.now() + timedelta(seconds=0.2)
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
        owns = self._ownership.owns
        fresh = [
            i
            for i in found
            if i.id not in state.waiting and i.id not in state.owner and owns((i.namespace, i.group_id))
        ]
        for instance in fresh:
            state.enqueue(instance)
        if fresh:
            log.warning("%d waiting instance(s) found in the store and queued for dispatch", len(fresh))

    async def _dispatch_due(self) -> datetime:
        """Submit every due waiting instance that a worker can take; returns when to look again."""
        now = self._clock.now()
        submitted: list[_Submitted] = []
        try:
            next_at = await self._submit_due(now, submitted)
        finally:
            await self._record_and_send(submitted)
        return next_at

    async def _submit_due(self, now: datetime, submitted: list[_Submitted]) -> datetime:
        """Take due entries in schedule order across the jobs' queues (a merge of their heads) until
        each queue is empty, not due yet, or blocked: its group's workers are full, or none serves it."""
        state = self._state
        next_at = now + _IDLE
        heads: list[tuple[datetime, int, int]] = []
        for job_id in list(state.queues):
            head = state.head(job_id)
            if head is not None:
                heads.append((head.due, head.instance.id, job_id))
        heapq.heapify(heads)
        jobs: dict[int, Job | None] = {}
        deferred: list[Waiting] = []
        full: set[tuple[str, str]] = set()
        """Groups none of whose workers has room now: their queues wait for a report to wake the loop."""
        try:
            while heads:
                due, _, job_id = heapq.heappop(heads)
                if due > now:
                    next_at = min(next_at, due)
                    continue  # the rest of this queue is due later still
                entry = state.head(job_id)
                if entry is None:
                    continue
                instance = entry.instance
                group = (instance.namespace, instance.group_id)
                if group in full or (not state.registry.has_room(*group) and state.registry.live(*group)):
                    full.add(group)
                    continue  # blocked: nothing of this group goes out in this pass
                state.take(job_id)
                wait = await self._submit_entry(entry, jobs, now, submitted)
                if wait is not None and wait.until is not None:
                    next_at = min(next_at, wait.until)
                if state.waiting.get(instance.id) is entry:
                    deferred.append(entry)  # still waiting: back in its queue after the pass
                    if wait is not None and wait.blocks:
                        continue  # so does the rest of its job's queue
                following = state.head(job_id)
                if following is not None:
                    heapq.heappush(heads, (following.due, following.instance.id, job_id))
        finally:
            for entry in deferred:
                if state.waiting.get(entry.instance.id) is entry:
                    state.queue(entry)
        return next_at

    async def _submit_entry(
        self, entry: Waiting, jobs: dict[int, Job | None], now: datetime, submitted: list[_Submitted]
    ) -> _Wait | None:
        """Submit, fail or leave one due entry (see `_submit`), reading its job once per pass."""
        waiting = self._state.waiting
        instance = entry.instance
        if instance.job_id not in jobs:
            try:
                jobs[instance.job_id] = await self._store.get_job(instance.job_id)
            except Exception as exc:  # one unreadable definition must not stall the pass
                log.exception("job %d of instance %d cannot be read", instance.job_id, instance.id)
                waiting.pop(instance.id, None)
                await self._reports.fail(
                    instance.id,
                    shorten_head(f"job {instance.job_id} cannot be read: {describe_exception(exc)}"),
                    system_failure=False,
                )
                return None
        job = jobs[instance.job_id]
        if waiting.get(instance.id) is not entry:
            return None  # killed or claimed during the read
        if job is None:
            del waiting[instance.id]
            await self._reports.fail(
                instance.id, f"job {instance.job_id} no longer exists", system_failure=False
            )
            return None
        return await self._submit(entry, job, now, submitted)

    async def _submit(
        self, entry: Waiting, job: Job, now: datetime, submitted: list[_Submitted]
    ) -> _Wait | None:
        """Assign one instance to a worker (it joins ``submitted``, to be recorded READY and sent), fail
        it (None both), or leave it waiting (`_Wait`): workers at capacity, none online yet (until its
        deadline), or a worker holding its task file awaited."""
        state = self._state
        registry = state.registry
        instance = entry.instance
        processor = processor_of(job)
        refused = state.refused.get(instance.id, {})
        holders = self._task_file_holders(instance.id, now)
        session = registry.pick(
            instance.namespace, instance.group_id, processor, exclude=frozenset(refused), only=holders
        )
        if session is None and holders is not None:
            # A holder of its task file may come back until then; the rest of its job's queue goes on.
            return _Wait(state.resume_until[instance.id], blocks=False)
        if session is None:
            eligible = registry.eligible(instance.namespace, instance.group_id, processor)
            remaining = [s for s in eligible if s.worker_id not in refused]
            if remaining:
                # At capacity; with workers that refused it excluded, others of the queue may still go.
                return _FULL if not refused else _Wait(None, blocks=False)
            if refused:
                del state.waiting[instance.id]
                reasons = "; ".join(f"{wid}: {msg}" for wid, msg in sorted(refused.items()))
                await self._reports.fail(
                    instance.id, f"refused by every worker: {reasons}", system_failure=False
                )
                return None
            if now < entry.deadline:
                return _Wait(entry.deadline, blocks=True)  # no worker serves it yet
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
        try:
            spec = build_instance_spec(job, instance, workers=workers)
        except Exception as exc:  # a definition the protocol cannot carry must not stall the pass
            log.exception("instance %d of job %d cannot be sent to a worker", instance.id, job.id)
            await self._reports.fail(
                instance.id,
                shorten_head(f"cannot be sent to a worker: {describe_exception(exc)}"),
                system_failure=False,
            )
            return None
        session.assigned[instance.id] = Assignment(instance.id, job.id)
        state.owner[instance.id] = session.key
        message = scheduler_pb2.SchedulerMessage(submit=scheduler_pb2.SubmitInstance(instance=spec))
        submitted.append(_Submitted(entry, job.id, session, message))
        return None

    def _task_file_holders(self, instance_id: int, now: datetime) -> frozenset[str] | None:
        """The workers a batch instance whose master was lost waits for (they hold its task file, so it
        resumes there), or None once the wait is over or when it waits for none."""
        state = self._state
        until = state.resume_until.get(instance_id)
        if until is None:
            return None
        if now >= until:
            del state.resume_until[instance_id]
            log.warning(
                "instance %d: no worker holding its task file took it in time; it starts over on any worker",
                instance_id,
            )
            return None
        return frozenset(key.worker_id for key in state.task_files.get(instance_id, ()))

    async def _record_and_send(self, submitted: list[_Submitted]) -> None:
        """Record the pass's assignments READY in one store call, then send them. Writing first makes a
        crash between the two harmless (the restart finds them READY and asks their workers); one write
        per pass rather than per instance keeps a pass over many due instances as fast as one
        transaction. An instance that ended during the write (stopped) is dropped unsent; if the write
        fails, nothing was sent and the instances go back to the queue."""
        if not submitted:
            return
        crash_point("dispatch.assigned")
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
        state = self._state
        try:
            updated = await self._store.update_instances(
                changes,
                only_if_status=(InstanceStatus.WAITING, InstanceStatus.READY),
                fence=self._ownership.fence(),
            )
        except BaseException:
            for s in submitted:
                if s.instance_id in s.session.assigned:
                    state.release(s.instance_id)
                    state.requeue(s.entry)
            raise
        crash_point("dispatch.recorded")
        for s in submitted:
            if s.instance_id not in s.session.assigned:
                continue  # stopped, or its worker went, while the write ran: the stop path saw to it
            if updated.get(s.instance_id) is None:
                state.release(s.instance_id)
                state.forget(s.instance_id)
                continue  # it ended meanwhile: never sent, nothing to undo on a worker
            self._state.tracing.dispatched(s.message.submit.instance, s.session.worker_id)
            s.session.send(s.message)
            log.info(
                "instance %d of job %d submitted to worker %s", s.instance_id, s.job_id, s.session.worker_id
            )
            crash_point("dispatch.sent")
