"""The `Dispatcher`: the dispatch package's one public object, wiring its parts together.

It makes the shared `DispatchState` and the parts that act on it (`InstanceReports`, `WorkerSessions`,
`Submission`, `TaskRpcs`), recovers the store's unfinished instances at start, runs the dispatch and
liveness loops, and kills instances on request. The instance state machine, and which part implements
each transition, is described in the package docstring (``sx.scheduler.dispatch``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from datetime import timedelta
from typing import Protocol

import grpc

from sx.processors import InstanceStatus
from sx.processors.engine import killed_result
from sx.protos.v1 import scheduler_pb2_grpc
from sx.scheduler._clock import Clock
from sx.scheduler.dispatch._registry import WorkerInfo
from sx.scheduler.dispatch._reports import InstanceReports, OnFinished
from sx.scheduler.dispatch._servicer import SchedulerServicer
from sx.scheduler.dispatch._sessions import WorkerSessions
from sx.scheduler.dispatch._state import RECOVERY_LIMIT, DispatchState, kill_message
from sx.scheduler.dispatch._submission import Submission
from sx.scheduler.dispatch._task_rpcs import TaskRpcs
from sx.scheduler.store import AccessStore, Instance, InstanceStore, JobStore, ParallelTaskStore

__all__ = ["DispatchStore", "Dispatcher"]


class DispatchStore(AccessStore, JobStore, InstanceStore, ParallelTaskStore, Protocol):
    """Everything the dispatcher's parts use: groups, jobs, instances and parallel task records."""


log = logging.getLogger("sx.scheduler.dispatch")

# How often the store's WAITING instances are read again, for any created without reaching dispatch.
_WAITING_RESCAN = 20.0


class Dispatcher:
    """Submits instances to the workers connected over gRPC and records what they report.

    ``on_finished(instance, system_failure)`` is called once per instance this dispatcher finishes
    (``system_failure`` is True when its worker was lost, so the lifecycle may retry it). Every
    ``waiting_rescan`` seconds the store's WAITING instances are read again, so one whose creator could
    not hand it over (``instance_created`` never called) is still dispatched.
    """

    def __init__(
        self,
        store: DispatchStore,
        *,
        clock: Clock,
        on_finished: OnFinished,
        heartbeat_interval: float = 3.0,
        heartbeat_timeout: float = 10.0,
        no_worker_grace: float = 30.0,
        batch_resume_wait: float = 30.0,
        waiting_rescan: float = _WAITING_RESCAN,
        scheduler_id: str | None = None,
    ) -> None:
        for name, value in (
            ("heartbeat_interval", heartbeat_interval),
            ("heartbeat_timeout", heartbeat_timeout),
        ):
            if value <= 0:
                raise ValueError(f"{name}={value!r}: must be more than 0 seconds")
        if heartbeat_timeout < heartbeat_interval:
            raise ValueError(
                f"heartbeat_timeout={heartbeat_timeout!r}: must not be shorter than "
                f"heartbeat_interval={heartbeat_interval!r}"
            )
        for name, value in (("no_worker_grace", no_worker_grace), ("batch_resume_wait", batch_resume_wait)):
            if value < 0:
                raise ValueError(f"{name}={value!r}: must be 0 or more seconds")
        if waiting_rescan <= 0:
            raise ValueError(f"waiting_rescan={waiting_rescan!r}: must be more than 0 seconds")
        self._store = store
        self._clock = clock
        self.scheduler_id = scheduler_id or f"{socket.gethostname()}_{os.getpid()}_{uuid.uuid4().hex[:8]}"
        self._state = DispatchState(clock=clock, no_worker_grace=timedelta(seconds=no_worker_grace))
        self._reports = InstanceReports(store, clock=clock, state=self._state, on_finished=on_finished)
        self._sessions = WorkerSessions(
            store,
            clock=clock,
            state=self._state,
            reports=self._reports,
            heartbeat_interval=heartbeat_interval,
            heartbeat_timeout=timedelta(seconds=heartbeat_timeout),
            batch_resume_wait=timedelta(seconds=batch_resume_wait),
            scheduler_id=self.scheduler_id,
        )
        self._submission = Submission(
            store,
            clock=clock,
            state=self._state,
            reports=self._reports,
            waiting_rescan=timedelta(seconds=waiting_rescan),
        )
        self._task_rpcs = TaskRpcs(store, state=self._state)
        self._tasks: list[asyncio.Task[None]] = []

    def add_to_server(self, server: grpc.aio.Server) -> None:
        """Register the Scheduler service (the workers' Connect stream) on a grpc.aio server."""
        servicer = SchedulerServicer(self._sessions, self._task_rpcs)
        scheduler_pb2_grpc.add_SchedulerServicer_to_server(servicer, server)

    async def start(self) -> None:
        """Recover the store's WAITING, READY and RUNNING instances and start the dispatch loops."""
        if self._tasks:
            return
        state = self._state
        now = self._clock.now()
        self._submission.reset_rescan(now)
        for instance in await self._store.instances_with_status(
            [InstanceStatus.WAITING], limit=RECOVERY_LIMIT
        ):
            state.enqueue(instance)
        active = await self._store.instances_with_status(
            [InstanceStatus.READY, InstanceStatus.RUNNING], limit=RECOVERY_LIMIT
        )
        self._sessions.hold_for_workers(active, now=now)
        log.info(
            "dispatcher %s started: %d waiting, %d awaiting their workers",
            self.scheduler_id,
            len(state.waiting),
            sum(len(o.assigned) for o in state.orphans.values()),
        )
        self._tasks = [
            asyncio.create_task(self._submission.dispatch_loop(), name="sx-dispatch"),
            asyncio.create_task(self._sessions.liveness_loop(), name="sx-liveness"),
        ]

    @property
    def running(self) -> bool:
        """Both loops (dispatch and worker liveness) are alive."""
        return bool(self._tasks) and not any(task.done() for task in self._tasks)

    def queue_depth(self) -> int:
        """Instances waiting for a worker now."""
        return len(self._state.waiting)

    def workers_per_group(self) -> dict[tuple[str, str], int]:
        """Connected workers by (namespace, group id)."""
        counts: dict[tuple[str, str], int] = {}
        for session in self._state.registry.sessions():
            group = (session.key.namespace, session.key.group_id)
            counts[group] = counts.get(group, 0) + 1
        return counts

    async def stop(self) -> None:
        """Stop the loops and end every worker stream; instances are left for the next start."""
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._sessions.close_all("the scheduler is shutting down")

    async def instance_created(self, instance: Instance) -> None:
        """Dispatch a new WAITING instance now, or when its schedule time comes."""
        self._state.enqueue(instance)

    async def stop_instance(self, instance: Instance, reason: str) -> bool:
        """Kill an instance: on its worker if it runs on one, else finish it FAILED at once.

        Returns False when the instance had already finished."""
        state = self._state
        instance_id = instance.id
        state.waiting.pop(instance_id, None)
        key = state.owner.get(instance_id)
        session = state.registry.get(key) if key is not None else None
        if session is not None and instance_id in session.assigned:
            assignment = session.assigned[instance_id]
            assignment.kill_reason = reason
            session.send(kill_message(instance_id, assignment.job_id, reason))
            log.info("kill of instance %d sent to worker %s: %s", instance_id, session.worker_id, reason)
            return True
        # Not running on a connected worker: finish it here. A worker that comes back still running it
        # is told to kill it when it lists it on registering.
        state.release(instance_id)
        result = killed_result(reason)
        return await self._reports.fail(instance_id, result, system_failure=False) is not None

    def live_workers(self, namespace: str, group_id: str) -> list[WorkerInfo]:
        """The workers of a group connected now and taking instances."""
        return [session.info() for session in self._state.registry.live(namespace, group_id)]

    def connected_workers(self, namespace: str, group_id: str) -> list[WorkerInfo]:
        """The workers of a group connected now, draining ones included (the ListWorkers extension)."""
        return [session.info() for session in self._state.registry.connected(namespace, group_id)]
