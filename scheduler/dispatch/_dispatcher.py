"""The `Dispatcher`: the dispatch package's one public object, wiring its parts together.

It makes the shared `DispatchState` and the parts that act on it (`InstanceReports`,
`WorkerRegistration`, `WorkerSessions`, `WorkerStreamReader`, `Submission`, `TaskRpcs`), recovers the
store's unfinished instances at start, runs the dispatch and liveness loops, and kills instances on
request. The instance state machine, and which part implements
each transition, is described in the package docstring (``sx.scheduler.dispatch``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
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
from sx.scheduler.dispatch._log_writer import InstanceLogWriter
from sx.scheduler.dispatch._ownership import GroupKey, GroupOwnership, OwnershipStore, presence_key
from sx.scheduler.dispatch._registration import WorkerRegistration
from sx.scheduler.dispatch._registry import WorkerInfo
from sx.scheduler.dispatch._reports import InstanceReports, OnFinished
from sx.scheduler.dispatch._servicer import SchedulerServicer
from sx.scheduler.dispatch._sessions import WorkerSessions
from sx.scheduler.dispatch._state import RECOVERY_LIMIT, DispatchState, kill_message, redirect_message
from sx.scheduler.dispatch._stream_reader import WorkerStreamReader
from sx.scheduler.dispatch._submission import Submission
from sx.scheduler.dispatch._task_rpcs import TaskRpcs
from sx.scheduler.dispatch._tracing import InstanceTracing
from sx.scheduler.store import (
    Instance,
    InstanceLogStore,
    InstanceStore,
    JobStore,
    ParallelTaskStore,
    SchedulerReplica,
)

__all__ = ["DispatchStore", "Dispatcher"]


class DispatchStore(OwnershipStore, JobStore, InstanceStore, ParallelTaskStore, InstanceLogStore, Protocol):
    """Everything the dispatcher's parts use: groups, jobs, instances, parallel task records and the
    instances' online logs."""


log = logging.getLogger("sx.scheduler.dispatch")

# Signals between replicas: "created ID,ID,..." (dispatch them) and "stop ID REASON" (kill it).
_CREATED = "created"
_STOP = "stop"
_REASON_LIMIT = 4000  # NOTIFY payloads are limited to 8,000 bytes
_IDS_PER_SIGNAL = 500

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
        lease_seconds: float = 6.0,
        instance_log_lines: int = 10_000,
        tracing: InstanceTracing | None = None,
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
        self._state = DispatchState(
            clock=clock, no_worker_grace=timedelta(seconds=no_worker_grace), tracing=tracing
        )
        self.ownership = GroupOwnership(
            store,
            replica=SchedulerReplica(
                self.scheduler_id, grpc_address="", http_url="", presence_key=presence_key()
            ),
            lease=timedelta(seconds=lease_seconds),
            on_acquired=self._group_acquired,
            on_lost=self._group_lost,
            workers_of=self._workers_json,
            on_signal=self._on_signal,
        )
        """Which groups this scheduler dispatches (leases shared with the other replicas)."""
        self._signal_tasks: set[asyncio.Task[None]] = set()
        self._outgoing: list[int] = []
        """Instances created here for groups other replicas dispatch, to be signalled to them."""
        self._flushing: asyncio.Task[None] | None = None
        self._stopping = False
        self._reports = InstanceReports(
            store, clock=clock, state=self._state, on_finished=on_finished, ownership=self.ownership
        )
        self.logs = InstanceLogWriter(store, max_lines=instance_log_lines)
        """Stores the log lines workers ship (``instance_log_lines`` kept per instance)."""
        self._registration = WorkerRegistration(
            store,
            clock=clock,
            heartbeat_interval=heartbeat_interval,
            heartbeat_timeout=timedelta(seconds=heartbeat_timeout),
            scheduler_id=self.scheduler_id,
            ownership=self.ownership,
        )
        self._sessions = WorkerSessions(
            store,
            clock=clock,
            state=self._state,
            reports=self._reports,
            heartbeat_interval=heartbeat_interval,
            heartbeat_timeout=timedelta(seconds=heartbeat_timeout),
            batch_resume_wait=timedelta(seconds=batch_resume_wait),
            ownership=self.ownership,
        )
        self._stream_reader = WorkerStreamReader(
            clock=clock, state=self._state, reports=self._reports, ownership=self.ownership, logs=self.logs
        )
        self._submission = Submission(
            store,
            clock=clock,
            state=self._state,
            reports=self._reports,
            waiting_rescan=timedelta(seconds=waiting_rescan),
            ownership=self.ownership,
        )
        self._task_rpcs = TaskRpcs(store, state=self._state)
        self._tasks: list[asyncio.Task[None]] = []

    def add_to_server(self, server: grpc.aio.Server) -> None:
        """Register the Scheduler service (the workers' Connect stream) on a grpc.aio server."""
        servicer = SchedulerServicer(self._registration, self._sessions, self._stream_reader, self._task_rpcs)
        scheduler_pb2_grpc.add_SchedulerServicer_to_server(servicer, server)

    async def start(self, *, grpc_address: str = "", http_url: str = "") -> None:
        """Check in as a replica at these addresses (where the others send workers and callers), take
        this replica's share of the groups (recovering their WAITING, READY and RUNNING instances) and
        start the dispatch loops."""
        if self._tasks:
            return
        state = self._state
        self._submission.reset_rescan(self._clock.now())
        replica = self.ownership.replica
        self.ownership.replica = SchedulerReplica(
            replica.replica_id,
            grpc_address=grpc_address,
            http_url=http_url,
            presence_key=replica.presence_key,
        )
        await self.ownership.start()
        log.info(
            "dispatcher %s started: %d group(s), %d waiting, %d awaiting their workers",
            self.scheduler_id,
            len(self.ownership.held()),
            len(state.waiting),
            sum(len(o.assigned) for o in state.orphans.values()),
        )
        self._tasks = [
            asyncio.create_task(self._submission.dispatch_loop(), name="sx-dispatch"),
            asyncio.create_task(self._sessions.liveness_loop(), name="sx-liveness"),
        ]
        await self.logs.start()

    @property
    def running(self) -> bool:
        """The loops (dispatch, worker liveness, group ownership) are alive."""
        return bool(self._tasks) and not any(task.done() for task in self._tasks) and self.ownership.running

    # -- groups taken on and given up (GroupOwnership's callbacks) ------------------------------------
    async def _group_acquired(self, group: GroupKey) -> None:
        """This replica now dispatches the group: queue its WAITING instances, hold its READY and RUNNING
        ones for their workers (which reconnect here, or are lost after the heartbeat timeout), and apply
        the stops asked for them that their last owner did not."""
        namespace, group_id = group
        state = self._state
        for instance in await self._store.instances_with_status(
            [InstanceStatus.WAITING], namespace=namespace, group_id=group_id, limit=RECOVERY_LIMIT
        ):
            state.enqueue(instance)
        active = await self._store.instances_with_status(
            [InstanceStatus.READY, InstanceStatus.RUNNING],
            namespace=namespace,
            group_id=group_id,
            limit=RECOVERY_LIMIT,
        )
        self._sessions.orphans.hold_for_workers(active, now=self._clock.now())
        # Stops asked on other replicas that the group's last owner did not apply before it went.
        for instance_id, reason in await self._store.stop_requests(namespace, group_id):
            to_stop = await self._store.get_instance(instance_id)
            if to_stop is not None and not to_stop.status.finished:
                await self.stop_instance(to_stop, reason)
        state.dispatch_wake.set()
        state.liveness_wake.set()

    async def _group_lost(self, group: GroupKey, address: str) -> None:
        """Another replica dispatches the group now: forget it and send its workers there."""
        reason = f"group {group[1]!r} of namespace {group[0]!r} is dispatched by " + (
            address or "another scheduler"
        )
        for session in self._state.drop_group(*group):
            session.send(redirect_message(address, reason))
            session.close("", "")

    def _workers_json(self, group: GroupKey) -> str:
        sessions = self._state.registry.connected(*group)
        return json.dumps([session.info().to_json() for session in sessions])

    def _on_signal(self, payload: str) -> None:
        """A signal from a replica (this one too): an instance created, or a stop asked for."""
        if self._stopping:
            return  # the groups' next owner reads their instances from the store
        task = asyncio.create_task(self._apply_signal(payload), name="sx-signal")
        self._signal_tasks.add(task)
        task.add_done_callback(self._signal_tasks.discard)

    async def _apply_signal(self, payload: str) -> None:
        kind, _, rest = payload.partition(" ")
        ids, _, reason = rest.partition(" ")
        try:
            for id_text in ids.split(","):
                instance = await self._store.get_instance(int(id_text))
                if instance is None or not self.ownership.owns((instance.namespace, instance.group_id)):
                    continue
                if kind == _CREATED:
                    self._state.enqueue(instance)
                elif kind == _STOP:
                    await self.stop_instance(instance, reason)
        except Exception:
            log.exception("signal %r could not be applied", payload[:200])

    def _signal_created(self, instance_id: int) -> None:
        """Tell the replicas of an instance created here for a group another one dispatches; the ids
        created in one turn of the loop (a batch of fires) go in one signal."""
        self._outgoing.append(instance_id)
        if self._flushing is None or self._flushing.done():
            self._flushing = asyncio.create_task(self._flush_created(), name="sx-signal-created")

    async def _flush_created(self) -> None:
        await asyncio.sleep(0)  # let the rest of this batch of creations join
        while self._outgoing:
            batch, self._outgoing = self._outgoing[:_IDS_PER_SIGNAL], self._outgoing[_IDS_PER_SIGNAL:]
            try:
                await self._store.signal(f"{_CREATED} {','.join(map(str, batch))}")
            except Exception:
                # Not lost: they are WAITING in the store, where the owner's rescan finds them.
                log.exception("could not signal %d created instance(s) to their owners", len(batch))

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
        self._stopping = True
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._sessions.close_all("the scheduler is shutting down")
        if self._flushing is not None:
            with contextlib.suppress(Exception):
                await self._flushing  # created instances still reach their owners
        for task in list(self._signal_tasks):
            task.cancel()
        # Last: the other replicas take the groups over once the workers have been let go.
        await self.ownership.stop()
        await self.logs.stop()

    async def instance_created(self, instance: Instance) -> None:
        """Dispatch a new WAITING instance now, or when its schedule time comes; an instance of a group
        another replica dispatches is signalled to it."""
        if self.ownership.owns((instance.namespace, instance.group_id)):
            self._state.enqueue(instance)
        else:
            self._signal_created(instance.id)

    async def stop_instance(self, instance: Instance, reason: str) -> bool:
        """Kill an instance: on its worker if it runs on one, else finish it FAILED at once; an instance
        of a group another replica dispatches is signalled to it.

        Returns False when the instance had already finished."""
        group = (instance.namespace, instance.group_id)
        if not self.ownership.owns(group):
            current = await self._store.get_instance(instance.id)
            if current is None or current.status.finished:
                return False
            if self.ownership.owner_address(group):
                # Kept too: an owner that stops or dies before applying the signal leaves it to the next.
                await self._store.request_stop(instance.id, reason, now=self._clock.now())
                await self._store.signal(f"{_STOP} {instance.id} {reason[:_REASON_LIMIT]}")
                return True
            # No replica holds the group now: no worker runs it through a scheduler; end it here.
            result = killed_result(reason)
            return (
                await self._reports.fail(instance.id, result, system_failure=False, fenced=False) is not None
            )
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
        """The workers of a group connected now, draining ones included (the ListWorkers extension); for
        a group another replica dispatches, as its owner last published them (within a second or so)."""
        if self.ownership.owns((namespace, group_id)):
            return [session.info() for session in self._state.registry.connected(namespace, group_id)]
        return [WorkerInfo.from_json(data) for data in self.ownership.workers_snapshot((namespace, group_id))]
