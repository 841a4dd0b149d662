"""What the dispatcher's parts share: who holds which instance, the waiting queue, the orphans.

The `Dispatcher` makes one `DispatchState` and hands it to each part (worker sessions, reports,
submission, task RPCs); no part reaches into another's attributes. Every mutation runs on the event
loop between awaits, as it did when one class held it all.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sx.processors import InstanceStatus
from sx.protos.v1 import scheduler_pb2
from sx.scheduler._clock import Clock
from sx.scheduler.dispatch._registry import Assignment, WorkerKey, WorkerRegistry, WorkerSession
from sx.scheduler.dispatch._tracing import InstanceTracing
from sx.scheduler.store import Instance

__all__ = [
    "RECOVERY_LIMIT",
    "DispatchState",
    "Orphans",
    "Waiting",
    "forget_task_files_message",
    "kill_message",
    "mark_draining",
    "redirect_message",
    "same_group",
]

log = logging.getLogger("sx.scheduler.dispatch")

# A worker whose group no replica holds yet asks again after this long (an owner takes it within a
# second or so).
_NO_OWNER_RETRY_MS = 500

RECOVERY_LIMIT = 100_000
"""Recovery (at start, and each rescan) reads this many WAITING (and READY/RUNNING) instances."""


@dataclass(slots=True)
class Waiting:
    instance: Instance
    due: datetime
    deadline: datetime
    """Failed "no worker online" if no worker can take it by then."""


@dataclass(slots=True)
class Orphans:
    """Instances of a worker whose stream is gone, kept until it reconnects or ``deadline`` passes."""

    address: str
    deadline: datetime
    assigned: dict[int, Assignment] = field(default_factory=dict)


def kill_message(instance_id: int, job_id: int, reason: str) -> scheduler_pb2.SchedulerMessage:
    return scheduler_pb2.SchedulerMessage(
        kill=scheduler_pb2.KillInstance(instance_id=instance_id, job_id=job_id, reason=reason)
    )


def forget_task_files_message(instance_ids: list[int]) -> scheduler_pb2.SchedulerMessage:
    """Tell a worker the batch task files of these instances are of no more use (they ended)."""
    return scheduler_pb2.SchedulerMessage(
        forget_task_files=scheduler_pb2.ForgetTaskFiles(instance_ids=instance_ids)
    )


def redirect_message(address: str, reason: str) -> scheduler_pb2.SchedulerMessage:
    """Send a worker to the replica dispatching its group (``address`` "" when none does yet)."""
    return scheduler_pb2.SchedulerMessage(
        redirect=scheduler_pb2.Redirect(
            address=address, reason=reason, retry_after_ms=0 if address else _NO_OWNER_RETRY_MS
        )
    )


def same_group(session: WorkerSession, instance: Instance) -> bool:
    """A worker only runs, reports and takes over instances of its own namespace and group."""
    return (instance.namespace, instance.group_id) == (session.key.namespace, session.key.group_id)


def mark_draining(session: WorkerSession) -> None:
    """The worker is shutting down: send it nothing more (it still reports what it runs)."""
    if session.accepting:
        log.info("worker %s is draining: no more submissions to it", session.worker_id)
        session.accepting = False


class DispatchState:
    """The records the dispatcher keeps per worker and per instance, and the loops' wake-ups."""

    def __init__(
        self, *, clock: Clock, no_worker_grace: timedelta, tracing: InstanceTracing | None = None
    ) -> None:
        self._clock = clock
        self._no_worker_grace = no_worker_grace
        self.registry = WorkerRegistry()
        self.waiting: dict[int, Waiting] = {}
        """Instances waiting for a worker, by id (the submission queue)."""
        self.queues: dict[int, list[tuple[datetime, int, Waiting]]] = {}
        """Per job, its waiting instances as a heap by (due, id). A dispatch pass takes the earliest due
        first and stops at a job whose workers are full, so its cost follows what it dispatches, not how
        many wait. Entries taken out of ``waiting`` elsewhere stay here until a pass meets them."""
        self.orphans: dict[WorkerKey, Orphans] = {}
        self.owner: dict[int, WorkerKey] = {}
        """Which worker holds an instance: its live session or its orphans record."""
        self.refused: dict[int, dict[str, str]] = {}
        """Per instance, the workers that refused it and their messages."""
        self.delivered: dict[WorkerKey, OrderedDict[str, None]] = {}
        """Report delivery ids applied per worker (a replayed delivery is acknowledged, not applied)."""
        self.resumes: dict[int, int] = {}
        """Times a batch instance was submitted again after its master was lost."""
        self.task_files: dict[int, set[WorkerKey]] = {}
        """Per batch instance, the workers that hold its task file (its lost master, or ones that said so
        when they registered): where it resumes rather than starts over."""
        self.resume_until: dict[int, datetime] = {}
        """Per batch instance whose master was lost, until when it waits for a worker holding its file."""
        self.dispatch_wake = asyncio.Event()
        self.liveness_wake = asyncio.Event()
        self.tracing = tracing if tracing is not None else InstanceTracing()
        """Spans of instances as they are sent and report their end (no-ops unless tracing is on)."""

    def enqueue(self, instance: Instance, *, force: bool = False) -> None:
        """Queue a WAITING instance (any status with ``force``) unless a worker or the queue has it."""
        if not force and instance.status is not InstanceStatus.WAITING:
            return
        if instance.id in self.owner or instance.id in self.waiting:
            return
        now = self._clock.now()
        due = instance.schedule_time
        entry = Waiting(instance=instance, due=due, deadline=max(due, now) + self._no_worker_grace)
        self.waiting[instance.id] = entry
        self.queue(entry)
        self.dispatch_wake.set()

    def queue(self, entry: Waiting) -> None:
        """Put a waiting entry (in ``waiting``) in its job's queue, e.g. back after a pass took it out."""
        heapq.heappush(
            self.queues.setdefault(entry.instance.job_id, []), (entry.due, entry.instance.id, entry)
        )

    def requeue(self, entry: Waiting) -> None:
        """Make an entry a pass took out wait again (its submission could not be recorded)."""
        if self.waiting.setdefault(entry.instance.id, entry) is entry:
            self.queue(entry)

    def head(self, job_id: int) -> Waiting | None:
        """The job's earliest waiting entry (dropping the ones no longer waiting), None when none is."""
        queue = self.queues.get(job_id)
        while queue:
            entry = queue[0][2]
            if self.waiting.get(entry.instance.id) is entry:
                return entry
            heapq.heappop(queue)
        self.queues.pop(job_id, None)
        return None

    def take(self, job_id: int) -> Waiting:
        """Take the job's head (``head`` returned it) out of its queue; it stays in ``waiting``."""
        return heapq.heappop(self.queues[job_id])[2]

    def release(self, instance_id: int) -> Assignment | None:
        """Forget which worker holds an instance; returns its assignment."""
        key = self.owner.pop(instance_id, None)
        if key is None:
            return None
        session = self.registry.get(key)
        assignment = session.assigned.pop(instance_id, None) if session is not None else None
        orphans = self.orphans.get(key)
        if orphans is not None:
            assignment = orphans.assigned.pop(instance_id, None) or assignment
        return assignment

    def forget(self, instance_id: int) -> None:
        """Drop the per-instance records of an instance leaving the dispatcher (its owner aside); workers
        that hold a task file of it are told to remove it."""
        self.waiting.pop(instance_id, None)
        self.refused.pop(instance_id, None)
        self.resumes.pop(instance_id, None)
        self.resume_until.pop(instance_id, None)
        for key in self.task_files.pop(instance_id, ()):
            session = self.registry.get(key)
            if session is not None:
                session.send(forget_task_files_message([instance_id]))

    def drop_group(self, namespace: str, group_id: str) -> list[WorkerSession]:
        """Forget every record of a group this dispatcher no longer dispatches (its instances stay as
        they are in the store, for the new owner to take on); returns the group's sessions, which hold
        nothing now, to be sent to the new owner."""
        group = (namespace, group_id)
        for instance_id, entry in list(self.waiting.items()):
            if (entry.instance.namespace, entry.instance.group_id) == group:
                del self.waiting[instance_id]
        dropped: list[int] = []
        for key in [k for k in self.orphans if (k.namespace, k.group_id) == group]:
            dropped += self.orphans.pop(key).assigned
            self.delivered.pop(key, None)
        sessions = self.registry.connected(namespace, group_id)
        for session in sessions:
            dropped += session.assigned
            session.assigned.clear()
            session.accepting = False
            self.delivered.pop(session.key, None)
        for instance_id in dropped:
            self.owner.pop(instance_id, None)
            self.refused.pop(instance_id, None)
            self.resumes.pop(instance_id, None)
            self.resume_until.pop(instance_id, None)
            self.task_files.pop(instance_id, None)
        return sessions

    def holds(self, key: WorkerKey, instance_id: int) -> bool:
        """Whether this worker is connected now and holds the instance."""
        return self.registry.get(key) is not None and self.owner.get(instance_id) == key
