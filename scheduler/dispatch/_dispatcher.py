"""Dispatch: handing instances to connected workers and following them to their end.

Each worker keeps one `Scheduler.Connect` stream open. The `Dispatcher` authenticates it (group and
app key), keeps it in the `WorkerRegistry`, submits WAITING instances round robin to workers that serve
the processor, and applies the worker's reports to the store with a compare-and-set on the status, so a
late or repeated report never changes a finished instance.

Instance path through the store::

    WAITING --submit--> READY --accepted / RUNNING report--> RUNNING --final report--> SUCCESS | FAILED
       |                  |                                     |
       +-- no worker within the grace, or killed ------------->  FAILED
                          +-- worker lost (stream gone past the heartbeat timeout) --> FAILED, retried

A worker whose stream breaks keeps its instances for one heartbeat timeout: if it reconnects and lists
them in ``running_instance_ids`` they stay its own; otherwise they are failed as lost (accepted ones)
or submitted again (ones it never accepted). A restarted scheduler treats the READY and RUNNING
instances it finds in the store the same way.

A lost batch-mode instance is the exception: its master kept its subtasks in a file on its host, so the
same instance (same id) is submitted again, up to ``MAX_MASTER_RESUMES`` times; a master on the same
host resumes from the file, any other starts over.

RUNNING reports may carry progress (map masters send one every few seconds); it is stored as it comes.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import os
import socket
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc

from sx.processors._enums import ACTIVE_INSTANCE_STATUSES, ExecuteMode, InstanceStatus, TaskStatus
from sx.processors._invoke import killed_result
from sx.protos._auth import check_proof, task_caller_subject
from sx.protos.v1 import scheduler_pb2, scheduler_pb2_grpc
from sx.scheduler._clock import Clock
from sx.scheduler.dispatch._instance_spec import build_instance_spec, processor_of, wants_worker_list
from sx.scheduler.dispatch._registry import (
    Assignment,
    CloseStream,
    WorkerInfo,
    WorkerKey,
    WorkerRegistry,
    WorkerSession,
)
from sx.scheduler.store._store import Instance, InstanceChange, Job, NewTask, Store, TaskStatusChange

__all__ = ["Dispatcher", "WorkerInfo", "server_credentials"]

log = logging.getLogger("sx.scheduler.dispatch")

# Delivery ids remembered per worker; the status compare-and-set protects finals beyond this window.
_DELIVERY_MEMORY = 4096
# Recovery reads this many WAITING (and READY/RUNNING) instances at start.
_RECOVERY_LIMIT = 100_000
# Loops with nothing scheduled still look around this often (cheap; guards against a missed wake).
_IDLE = timedelta(seconds=60)
# How often the store's WAITING instances are read again, for any created without reaching dispatch.
_WAITING_RESCAN = 20.0
# A parallel instance's tasks are read whole (the mode caps them at a few hundred).
_TASKS_LOAD_LIMIT = 100_000
MAX_MASTER_RESUMES = 3
"""Times a batch instance whose master was lost is submitted again before it fails."""

OnFinished = Callable[[Instance, bool], Awaitable[None]]


def server_credentials(*, cert: bytes, key: bytes, client_ca: bytes | None) -> grpc.ServerCredentials:
    """TLS credentials for the scheduler's gRPC server (PEM bytes); with ``client_ca`` workers must
    present a certificate signed by it (mutual TLS)."""
    if not cert:
        raise ValueError("cert='': a PEM server certificate is required")
    if not key:
        raise ValueError("key='': a PEM private key is required")
    return grpc.ssl_server_credentials(
        [(key, cert)], root_certificates=client_ca, require_client_auth=client_ca is not None
    )


@dataclass(slots=True)
class _Waiting:
    instance: Instance
    due: datetime
    deadline: datetime
    """Failed "no worker online" if no worker can take it by then."""


@dataclass(slots=True)
class _Orphans:
    """Instances of a worker whose stream is gone, kept until it reconnects or ``deadline`` passes."""

    address: str
    deadline: datetime
    assigned: dict[int, Assignment] = field(default_factory=dict)


def _ms_to_datetime(ms: int) -> datetime | None:
    return datetime.fromtimestamp(ms / 1000, UTC) if ms > 0 else None


def _kill_message(instance_id: int, job_id: int, reason: str) -> scheduler_pb2.SchedulerMessage:
    return scheduler_pb2.SchedulerMessage(
        kill=scheduler_pb2.KillInstance(instance_id=instance_id, job_id=job_id, reason=reason)
    )


@dataclass(frozen=True, slots=True)
class _Submitted:
    """An instance sent to a worker in this dispatch pass, its READY write still to make."""

    instance_id: int
    job_id: int
    session: WorkerSession


class Dispatcher:
    """Submits instances to the workers connected over gRPC and records what they report.

    ``on_finished(instance, system_failure)`` is called once per instance this dispatcher finishes
    (``system_failure`` is True when its worker was lost, so the lifecycle may retry it). Every
    ``waiting_rescan`` seconds the store's WAITING instances are read again, so one whose creator could
    not hand it over (``instance_created`` never called) is still dispatched.
    """

    def __init__(
        self,
        store: Store,
        *,
        clock: Clock,
        on_finished: OnFinished,
        heartbeat_interval: float = 3.0,
        heartbeat_timeout: float = 10.0,
        no_worker_grace: float = 30.0,
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
        if no_worker_grace < 0:
            raise ValueError(f"no_worker_grace={no_worker_grace!r}: must be 0 or more seconds")
        if waiting_rescan <= 0:
            raise ValueError(f"waiting_rescan={waiting_rescan!r}: must be more than 0 seconds")
        self._store = store
        self._clock = clock
        self._on_finished = on_finished
        self._heartbeat_interval = heartbeat_interval
        self._heartbeat_timeout = timedelta(seconds=heartbeat_timeout)
        self._no_worker_grace = timedelta(seconds=no_worker_grace)
        self._waiting_rescan = timedelta(seconds=waiting_rescan)
        self._next_rescan = clock.now() + self._waiting_rescan
        self.scheduler_id = scheduler_id or f"{socket.gethostname()}_{os.getpid()}_{uuid.uuid4().hex[:8]}"
        self._registry = WorkerRegistry()
        self._waiting: dict[int, _Waiting] = {}
        self._orphans: dict[WorkerKey, _Orphans] = {}
        # Which worker holds an instance: its live session or its orphans record.
        self._owner: dict[int, WorkerKey] = {}
        self._refused: dict[int, dict[str, str]] = {}
        self._delivered: dict[WorkerKey, OrderedDict[str, None]] = {}
        self._resumes: dict[int, int] = {}
        self._dispatch_wake = asyncio.Event()
        self._liveness_wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    # -- public interface ----------------------------------------------------------------------
    def add_to_server(self, server: grpc.aio.Server) -> None:
        """Register the Scheduler service (the workers' Connect stream) on a grpc.aio server."""
        scheduler_pb2_grpc.add_SchedulerServicer_to_server(_SchedulerService(self), server)

    async def start(self) -> None:
        """Recover the store's WAITING, READY and RUNNING instances and start the dispatch loops."""
        if self._tasks:
            return
        now = self._clock.now()
        self._next_rescan = now + self._waiting_rescan
        for instance in await self._store.instances_with_status(
            [InstanceStatus.WAITING], limit=_RECOVERY_LIMIT
        ):
            self._enqueue(instance)
        for instance in await self._store.instances_with_status(
            [InstanceStatus.READY, InstanceStatus.RUNNING], limit=_RECOVERY_LIMIT
        ):
            if instance.id in self._owner:
                continue  # a worker that connected before start already claimed it
            key = WorkerKey(instance.namespace, instance.group_id, instance.worker_id)
            orphans = self._orphans.setdefault(
                key, _Orphans(address=instance.worker_addr, deadline=now + self._heartbeat_timeout)
            )
            orphans.assigned[instance.id] = Assignment(
                instance.id, instance.job_id, accepted=instance.status is InstanceStatus.RUNNING
            )
            self._owner[instance.id] = key
        log.info(
            "dispatcher %s started: %d waiting, %d awaiting their workers",
            self.scheduler_id,
            len(self._waiting),
            sum(len(o.assigned) for o in self._orphans.values()),
        )
        self._tasks = [
            asyncio.create_task(self._dispatch_loop(), name="sx-dispatch"),
            asyncio.create_task(self._liveness_loop(), name="sx-liveness"),
        ]

    async def stop(self) -> None:
        """Stop the loops and end every worker stream; instances are left for the next start."""
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for session in self._registry.sessions():
            session.close("UNAVAILABLE", "the scheduler is shutting down")

    async def instance_created(self, instance: Instance) -> None:
        """Dispatch a new WAITING instance now, or when its schedule time comes."""
        self._enqueue(instance)

    async def stop_instance(self, instance: Instance, reason: str) -> bool:
        """Kill an instance: on its worker if it runs on one, else finish it FAILED at once.

        Returns False when the instance had already finished."""
        instance_id = instance.id
        self._waiting.pop(instance_id, None)
        key = self._owner.get(instance_id)
        session = self._registry.get(key) if key is not None else None
        if session is not None and instance_id in session.assigned:
            assignment = session.assigned[instance_id]
            assignment.kill_reason = reason
            session.send(_kill_message(instance_id, assignment.job_id, reason))
            log.info("kill of instance %d sent to worker %s: %s", instance_id, session.worker_id, reason)
            return True
        # Not running on a connected worker: finish it here. A worker that comes back still running it
        # is told to kill it when it lists it on registering.
        self._release(instance_id)
        result = killed_result(reason)
        return await self._fail(instance_id, result, system_failure=False) is not None

    def live_workers(self, namespace: str, group_id: str) -> list[WorkerInfo]:
        """The workers of a group connected now and taking instances."""
        return [session.info() for session in self._registry.live(namespace, group_id)]

    # -- the worker stream ---------------------------------------------------------------------
    async def _authenticate(self, register: scheduler_pb2.Register, context: Any) -> None:
        for name in ("namespace", "group_id", "worker_id", "address"):
            if not getattr(register, name):
                await context.abort(
                    grpc.StatusCode.INVALID_ARGUMENT, f"register.{name} is empty: every worker must send it"
                )
        group = await self._store.get_group(register.namespace, register.group_id)
        where = f"group {register.group_id!r} in namespace {register.namespace!r}"
        if group is None:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, f"{where} does not exist")
            return
        if not register.app_key:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, f"app key for {where} is missing")
        if not hmac.compare_digest(register.app_key.encode(), group.app_key.encode()):
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, f"app key for {where} is wrong")

    def _new_session(self, register: scheduler_pb2.Register) -> WorkerSession:
        now = self._clock.now()
        return WorkerSession(
            key=WorkerKey(register.namespace, register.group_id, register.worker_id),
            address=register.address,
            labels=dict(register.labels),
            processors=frozenset(register.processors),
            capacity=max(register.capacity, 0),
            version=register.version,
            connected_at=now,
            last_seen=now,
        )

    def _registered_message(self, session: WorkerSession) -> scheduler_pb2.SchedulerMessage:
        return scheduler_pb2.SchedulerMessage(
            registered=scheduler_pb2.Registered(
                worker_id=session.worker_id,
                heartbeat_interval_ms=int(self._heartbeat_interval * 1000),
                heartbeat_timeout_ms=int(self._heartbeat_timeout.total_seconds() * 1000),
                scheduler_id=self.scheduler_id,
            )
        )

    async def _attach(self, session: WorkerSession, running_instance_ids: list[int]) -> None:
        """Make the session live and give it back the instances it says it still runs."""
        key = session.key
        now = self._clock.now()
        old = self._registry.add(session)
        if old is not None:
            # The same worker opened a new stream before the old one was seen to break.
            self._orphan(old, deadline=now + self._heartbeat_timeout)
            old.close("ABORTED", "replaced by a newer stream from the same worker")
        for instance_id in running_instance_ids:
            orphans = self._orphans.get(key)
            assignment = orphans.assigned.pop(instance_id, None) if orphans is not None else None
            if assignment is not None:
                assignment.accepted = True
                session.assigned[instance_id] = assignment
                self._owner[instance_id] = key
                if assignment.kill_reason is not None:
                    session.send(_kill_message(instance_id, assignment.job_id, assignment.kill_reason))
                continue
            instance = await self._store.get_instance(instance_id)
            if instance is None or instance.status.finished:
                session.send(_kill_message(instance_id, 0, "the instance has already finished"))
                continue
            if not self._same_group(session, instance):
                session.send(_kill_message(instance_id, instance.job_id, "not an instance of this group"))
                continue
            # Known elsewhere (or not at all, after a restart): this worker runs it, so it is its own.
            self._release(instance_id)
            self._waiting.pop(instance_id, None)
            session.assigned[instance_id] = Assignment(instance_id, instance.job_id, accepted=True)
            self._owner[instance_id] = key
            await self._store.update_instance(
                instance_id,
                InstanceChange(
                    status=InstanceStatus.RUNNING,
                    start_time=instance.start_time or now,
                    worker_id=session.worker_id,
                    worker_addr=session.address,
                    executor=session.executor,
                ),
                only_if_status=ACTIVE_INSTANCE_STATUSES,
            )
        orphans = self._orphans.get(key)
        if orphans is not None and not orphans.assigned:
            del self._orphans[key]
        log.info(
            "worker %s (%s) registered in group %s of namespace %s: processors %s, capacity %d, %d running",
            session.worker_id,
            session.address,
            key.group_id,
            key.namespace,
            sorted(session.processors),
            session.capacity,
            len(session.assigned),
        )
        self._dispatch_wake.set()
        self._liveness_wake.set()

    def _orphan(self, session: WorkerSession, *, deadline: datetime) -> None:
        """Move a gone session's instances aside until the worker reconnects or the deadline passes."""
        if not session.assigned:
            return
        orphans = self._orphans.setdefault(session.key, _Orphans(address=session.address, deadline=deadline))
        orphans.address = session.address
        orphans.deadline = min(orphans.deadline, deadline) if orphans.assigned else deadline
        orphans.assigned.update(session.assigned)
        session.assigned.clear()
        self._liveness_wake.set()

    def _detach(self, session: WorkerSession, *, grace: bool) -> None:
        """The session's stream ended (or is being ended): it takes no more work."""
        session.closed = True
        if not self._registry.remove(session):
            return  # replaced by a newer stream, which took its instances
        now = self._clock.now()
        deadline = now + self._heartbeat_timeout if grace else now
        if session.assigned:
            log.warning(
                "worker %s (%s) disconnected with %d instances; waiting until %s for it to come back",
                session.worker_id,
                session.address,
                len(session.assigned),
                deadline.isoformat(),
            )
            self._orphan(session, deadline=deadline)
        elif session.key not in self._orphans:
            self._delivered.pop(session.key, None)
        else:
            self._liveness_wake.set()

    async def _read_loop(
        self, session: WorkerSession, messages: AsyncIterator[scheduler_pb2.WorkerMessage]
    ) -> None:
        close = ("", "")
        try:
            async for message in messages:
                if session.closed:
                    break
                session.last_seen = self._clock.now()
                kind = message.WhichOneof("body")
                if kind == "heartbeat":
                    self._on_heartbeat(session, message.heartbeat)
                elif kind == "report":
                    await self._on_report(session, message.report)
                elif kind == "submit_reply":
                    await self._on_submit_reply(session, message.submit_reply)
                elif kind == "deregister":
                    log.info("worker %s deregistered: %s", session.worker_id, message.deregister.reason)
                    session.accepting = False
                else:
                    log.warning("worker %s sent an unexpected %s message; ignored", session.worker_id, kind)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the stream broke, or the store failed: the worker reconnects and re-sends
            if session.closed:
                return  # we ended it ourselves
            log.warning("stream of worker %s ended: %r", session.worker_id, exc)
            close = ("UNAVAILABLE", f"stream error: {exc}")
        if not session.closed:
            session.close(*close)

    def _on_heartbeat(self, session: WorkerSession, heartbeat: scheduler_pb2.Heartbeat) -> None:
        session.running = heartbeat.running
        if heartbeat.capacity > 0 and heartbeat.capacity != session.capacity:
            session.capacity = heartbeat.capacity
            self._dispatch_wake.set()
        session.cpu_load1 = heartbeat.cpu_load1
        session.rss_bytes = heartbeat.rss_bytes
        if heartbeat.draining:
            self._draining(session)

    def _draining(self, session: WorkerSession) -> None:
        """The worker is shutting down: send it nothing more (it still reports what it runs)."""
        if session.accepting:
            log.info("worker %s is draining: no more submissions to it", session.worker_id)
            session.accepting = False

    async def _on_report(self, session: WorkerSession, report: scheduler_pb2.InstanceReport) -> None:
        applied = self._delivered.setdefault(session.key, OrderedDict())
        delivery_id = report.delivery_id
        if delivery_id and delivery_id in applied:
            applied.move_to_end(delivery_id)
        else:
            try:
                status = InstanceStatus(report.status)
            except ValueError:
                status = None
            if status is InstanceStatus.RUNNING:
                start = _ms_to_datetime(report.start_time_ms) or self._clock.now()
                await self._mark_running(
                    session,
                    report.instance_id,
                    start,
                    only_if_status=ACTIVE_INSTANCE_STATUSES,
                    progress=report.progress,
                )
            elif status in (InstanceStatus.SUCCESS, InstanceStatus.FAILED):
                assert status is not None
                await self._finish_from_report(session, report, status)
            else:
                log.warning(
                    "worker %s reported instance %d with status %d (expected 3, 4 or 5); ignored",
                    session.worker_id,
                    report.instance_id,
                    report.status,
                )
            if delivery_id:
                applied[delivery_id] = None
                while len(applied) > _DELIVERY_MEMORY:
                    applied.popitem(last=False)
        session.send(scheduler_pb2.SchedulerMessage(ack=scheduler_pb2.ReportAck(delivery_id=delivery_id)))

    async def _on_submit_reply(self, session: WorkerSession, reply: scheduler_pb2.SubmitReply) -> None:
        instance_id = reply.instance_id
        if reply.accepted:
            assignment = session.assigned.get(instance_id)
            if assignment is not None:
                assignment.accepted = True
            await self._mark_running(
                session,
                instance_id,
                self._clock.now(),
                only_if_status=(InstanceStatus.WAITING, InstanceStatus.READY),
            )
            return
        log.warning("worker %s refused instance %d: %s", session.worker_id, instance_id, reply.message)
        if reply.draining:
            self._draining(session)
        if session.assigned.get(instance_id) is None:
            return
        self._release(instance_id)
        if not reply.draining:  # a draining worker refuses everything: no verdict on the instance
            self._refused.setdefault(instance_id, {})[session.worker_id] = reply.message
        instance = await self._store.get_instance(instance_id)
        if instance is not None and not instance.status.finished:
            self._enqueue(instance, force=True)

    async def _mark_running(
        self,
        session: WorkerSession,
        instance_id: int,
        start: datetime,
        *,
        only_if_status: tuple[InstanceStatus, ...],
        progress: str = "",
    ) -> None:
        """The worker runs the instance: record where, since when and (when reported) its progress."""
        if instance_id not in session.assigned:
            # Held elsewhere (an orphan record, the waiting set after a restart): the worker's word wins,
            # within its own namespace and group.
            instance = await self._store.get_instance(instance_id)
            if instance is not None and not self._same_group(session, instance):
                session.send(_kill_message(instance_id, instance.job_id, "not an instance of this group"))
                return
            if instance_id not in session.assigned:  # (it may have been assigned during the read)
                self._release(instance_id)
                self._waiting.pop(instance_id, None)
                session.assigned[instance_id] = Assignment(
                    instance_id, instance.job_id if instance else 0, accepted=True
                )
                self._owner[instance_id] = session.key
        assignment = session.assigned[instance_id]
        assignment.accepted = True
        if assignment.running_stored and not progress:
            return  # the submit reply already recorded it; skip a write per instance
        updated = await self._store.update_instance(
            instance_id,
            InstanceChange(
                status=InstanceStatus.RUNNING,
                start_time=start,
                worker_id=session.worker_id,
                worker_addr=session.address,
                executor=session.executor,
                progress=progress or None,
            ),
            only_if_status=only_if_status,
        )
        if updated is not None:
            if not assignment.running_stored:
                log.info("instance %d running on worker %s", instance_id, session.worker_id)
            assignment.running_stored = True
            return
        current = await self._store.get_instance(instance_id)
        if current is None or current.status.finished:
            # Killed or finished while the submit travelled: the worker must not keep running it.
            job_id = assignment.job_id
            self._release(instance_id)
            self._forget(instance_id)
            session.send(_kill_message(instance_id, job_id, "the instance has already finished"))

    async def _finish_from_report(
        self, session: WorkerSession, report: scheduler_pb2.InstanceReport, status: InstanceStatus
    ) -> None:
        instance_id = report.instance_id
        owner = self._owner.get(instance_id)
        if owner is not None and owner != session.key:
            # A late report, e.g. from a master declared lost whose instance another worker now runs.
            log.warning(
                "final report for instance %d from worker %s ignored: worker %s holds it",
                instance_id,
                session.worker_id,
                owner.worker_id,
            )
            session.send(_kill_message(instance_id, 0, f"the instance is held by worker {owner.worker_id}"))
            return
        if owner is None:
            instance = await self._store.get_instance(instance_id)
            if instance is None or not self._same_group(session, instance):
                log.warning(
                    "final report for instance %d from worker %s ignored: not an instance of its group",
                    instance_id,
                    session.worker_id,
                )
                return
            if self._owner.get(instance_id) not in (None, session.key):
                return  # claimed by another worker during the read; its report decides
        self._release(instance_id)
        self._forget(instance_id)
        updated = await self._store.update_instance(
            instance_id,
            InstanceChange(
                status=status,
                start_time=_ms_to_datetime(report.start_time_ms),
                end_time=_ms_to_datetime(report.end_time_ms) or self._clock.now(),
                worker_id=session.worker_id,
                worker_addr=session.address,
                executor=session.executor,
                result=report.result,
                progress=report.progress,
            ),
            only_if_status=ACTIVE_INSTANCE_STATUSES,
        )
        self._dispatch_wake.set()  # a slot on this worker is free
        if updated is None:
            log.info("late report for instance %d (already finished) from %s", instance_id, session.worker_id)
            return
        log.info(
            "instance %d %s on worker %s: %s",
            instance_id,
            status.name,
            session.worker_id,
            report.result[:200],
        )
        await self._notify(updated, system_failure=False)

    # -- bookkeeping ---------------------------------------------------------------------------
    def _enqueue(self, instance: Instance, *, force: bool = False) -> None:
        if not force and instance.status is not InstanceStatus.WAITING:
            return
        if instance.id in self._owner or instance.id in self._waiting:
            return
        now = self._clock.now()
        due = instance.schedule_time
        self._waiting[instance.id] = _Waiting(
            instance=instance, due=due, deadline=max(due, now) + self._no_worker_grace
        )
        self._dispatch_wake.set()

    def _release(self, instance_id: int) -> Assignment | None:
        """Forget which worker holds an instance; returns its assignment."""
        key = self._owner.pop(instance_id, None)
        if key is None:
            return None
        session = self._registry.get(key)
        assignment = session.assigned.pop(instance_id, None) if session is not None else None
        orphans = self._orphans.get(key)
        if orphans is not None:
            assignment = orphans.assigned.pop(instance_id, None) or assignment
        return assignment

    @staticmethod
    def _same_group(session: WorkerSession, instance: Instance) -> bool:
        """A worker only runs, reports and takes over instances of its own namespace and group."""
        return (instance.namespace, instance.group_id) == (session.key.namespace, session.key.group_id)

    def _forget(self, instance_id: int) -> None:
        """Drop the per-instance records of an instance leaving the dispatcher (its owner aside)."""
        self._waiting.pop(instance_id, None)
        self._refused.pop(instance_id, None)
        self._resumes.pop(instance_id, None)

    async def _back_to_waiting(
        self, instance_id: int, only_if_status: tuple[InstanceStatus, ...]
    ) -> Instance | None:
        """Put an instance whose worker was lost back to WAITING and queue it for dispatch."""
        updated = await self._store.update_instance(
            instance_id,
            InstanceChange(status=InstanceStatus.WAITING, worker_id="", worker_addr="", executor=""),
            only_if_status=only_if_status,
        )
        if updated is not None:
            self._enqueue(updated)
        return updated

    async def _fail(self, instance_id: int, result: str, *, system_failure: bool) -> Instance | None:
        self._forget(instance_id)
        updated = await self._store.update_instance(
            instance_id,
            InstanceChange(status=InstanceStatus.FAILED, result=result, end_time=self._clock.now()),
            only_if_status=ACTIVE_INSTANCE_STATUSES,
        )
        if updated is not None:
            log.warning("instance %d failed: %s", instance_id, result)
            await self._notify(updated, system_failure=system_failure)
        return updated

    async def _notify(self, instance: Instance, *, system_failure: bool) -> None:
        try:
            await self._on_finished(instance, system_failure)
        except Exception:
            log.exception("on_finished failed for instance %d", instance.id)

    # -- loops ---------------------------------------------------------------------------------
    async def _dispatch_loop(self) -> None:
        while True:
            self._dispatch_wake.clear()
            try:
                if self._clock.now() >= self._next_rescan:
                    await self._rescan_waiting()
                next_at = min(await self._dispatch_due(), self._next_rescan)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("dispatch pass failed; retrying")
                next_at = self._clock.now() + timedelta(seconds=1)
            await self._clock.sleep_until(next_at, self._dispatch_wake)

    async def _rescan_waiting(self) -> None:
        """Queue the store's WAITING instances this dispatcher does not know (their creator's hand-over
        failed); the ones it knows are skipped by ``_enqueue``."""
        self._next_rescan = self._clock.now() + self._waiting_rescan
        found = await self._store.instances_with_status([InstanceStatus.WAITING], limit=_RECOVERY_LIMIT)
        fresh = [i for i in found if i.id not in self._waiting and i.id not in self._owner]
        for instance in fresh:
            self._enqueue(instance)
        if fresh:
            log.warning("%d waiting instance(s) found in the store and queued for dispatch", len(fresh))

    async def _dispatch_due(self) -> datetime:
        """Submit every due waiting instance that a worker can take; returns when to look again."""
        now = self._clock.now()
        next_at = now + _IDLE
        due: list[_Waiting] = []
        for entry in self._waiting.values():
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
        due: list[_Waiting],
        jobs: dict[int, Job | None],
        now: datetime,
        next_at: datetime,
        submitted: list[_Submitted],
    ) -> datetime:
        for entry in due:
            instance = entry.instance
            if self._waiting.get(instance.id) is not entry:
                continue  # killed or claimed during an await of this pass
            if instance.job_id not in jobs:
                jobs[instance.job_id] = await self._store.get_job(instance.job_id)
            job = jobs[instance.job_id]
            if self._waiting.get(instance.id) is not entry:
                continue
            if job is None:
                del self._waiting[instance.id]
                await self._fail(instance.id, f"job {instance.job_id} no longer exists", system_failure=False)
                continue
            wait_until = await self._submit(entry, job, now, submitted)
            if wait_until is not None:
                next_at = min(next_at, wait_until)
        return next_at

    async def _submit(
        self, entry: _Waiting, job: Job, now: datetime, submitted: list[_Submitted]
    ) -> datetime | None:
        """Submit one instance (its READY write joins ``submitted``), fail it, or leave it waiting
        (returning when to look again)."""
        instance = entry.instance
        processor = processor_of(job)
        refused = self._refused.get(instance.id, {})
        session = self._registry.pick(
            instance.namespace, instance.group_id, processor, exclude=frozenset(refused)
        )
        if session is None:
            eligible = self._registry.eligible(instance.namespace, instance.group_id, processor)
            remaining = [s for s in eligible if s.worker_id not in refused]
            if remaining:
                return None  # workers are at capacity: a finishing instance wakes the loop
            if refused:
                del self._waiting[instance.id]
                reasons = "; ".join(f"{wid}: {msg}" for wid, msg in sorted(refused.items()))
                await self._fail(instance.id, f"refused by every worker: {reasons}", system_failure=False)
                return None
            if now < entry.deadline:
                return entry.deadline
            del self._waiting[instance.id]
            where = f"group {instance.group_id} of namespace {instance.namespace}"
            if processor and self._registry.live(instance.namespace, instance.group_id):
                result = f"no worker online in {where} serves processor {processor}"
            else:
                result = f"no worker online in {where}"
            await self._fail(instance.id, result, system_failure=False)
            return None
        del self._waiting[instance.id]
        workers: list[tuple[str, str]] = []
        if wants_worker_list(job):
            workers = [
                (s.worker_id, s.address)
                for s in self._registry.eligible(instance.namespace, instance.group_id, processor)
            ]
        spec = build_instance_spec(job, instance, workers=workers)
        session.assigned[instance.id] = Assignment(instance.id, job.id)
        self._owner[instance.id] = session.key
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
                self._release(s.instance_id)
                self._forget(s.instance_id)
                s.session.send(_kill_message(s.instance_id, s.job_id, "the instance has already finished"))

    async def _liveness_loop(self) -> None:
        while True:
            self._liveness_wake.clear()
            try:
                next_at = await self._check_liveness()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("liveness pass failed; retrying")
                next_at = self._clock.now() + timedelta(seconds=1)
            await self._clock.sleep_until(next_at, self._liveness_wake)

    async def _check_liveness(self) -> datetime:
        now = self._clock.now()
        next_at = now + timedelta(seconds=self._heartbeat_interval)
        for session in list(self._registry.sessions()):
            expiry = session.last_seen + self._heartbeat_timeout
            if expiry <= now:
                seconds = self._heartbeat_timeout.total_seconds()
                log.warning("worker %s silent for %ss: dropped", session.worker_id, seconds)
                session.close("UNAVAILABLE", f"no message from worker {session.worker_id} for {seconds}s")
                self._detach(session, grace=False)
            else:
                next_at = min(next_at, expiry)
        for key, orphans in list(self._orphans.items()):
            if orphans.deadline > now:
                next_at = min(next_at, orphans.deadline)
                continue
            del self._orphans[key]
            if self._registry.get(key) is None:
                self._delivered.pop(key, None)
            await self._lose(key, orphans)
        return next_at

    async def _lose(self, key: WorkerKey, orphans: _Orphans) -> None:
        """The worker did not come back for these instances."""
        for instance_id, assignment in orphans.assigned.items():
            owner = self._owner.get(instance_id)
            if owner is not None and owner != key:
                continue  # another worker took it over meanwhile: it is that worker's now
            self._owner.pop(instance_id, None)
            if assignment.accepted:
                if await self._resume(instance_id, key, orphans.address):
                    continue
                await self._fail(
                    instance_id, f"worker {key.worker_id} ({orphans.address}) lost", system_failure=True
                )
                continue
            # Never accepted: it most likely never ran, so it is submitted again.
            await self._back_to_waiting(instance_id, (InstanceStatus.WAITING, InstanceStatus.READY))

    async def _resume(self, instance_id: int, key: WorkerKey, address: str) -> bool:
        """Submit a lost batch instance again under its id; False when it is not one or was resumed enough."""
        instance = await self._store.get_instance(instance_id)
        if instance is None or instance.status.finished:
            return False
        job = await self._store.get_job(instance.job_id)
        if job is None or ExecuteMode(job.spec.execute_mode) is not ExecuteMode.BATCH:
            return False
        count = self._resumes.get(instance_id, 0)
        if count >= MAX_MASTER_RESUMES:
            self._resumes.pop(instance_id, None)
            return False
        self._resumes[instance_id] = count + 1
        if await self._back_to_waiting(instance_id, ACTIVE_INSTANCE_STATUSES) is None:
            self._resumes.pop(instance_id, None)
            return False
        log.warning(
            "instance %d: master %s (%s) lost; submitting it again (resume %d of %d)",
            instance_id,
            key.worker_id,
            address,
            count + 1,
            MAX_MASTER_RESUMES,
        )
        return True

    # -- the server-side subtask store (parallel mode) ------------------------------------------
    # Only the worker holding an instance (its master) reads and writes the instance's tasks.
    async def _check_task_caller(
        self, caller: scheduler_pb2.TaskCaller, instance_id: int, context: Any
    ) -> None:
        # Worker ids are not secret: the caller proves it knows the group's app key.
        group = await self._store.get_group(caller.namespace, caller.group_id)
        subject = task_caller_subject(caller.namespace, caller.group_id, caller.worker_id, instance_id)
        why = "no such group" if group is None else check_proof(group.app_key, subject, caller.proof)
        if why is not None:
            await context.abort(
                grpc.StatusCode.UNAUTHENTICATED,
                f"caller.proof: worker {caller.worker_id!r} of group {caller.group_id!r}: {why}",
            )
        key = WorkerKey(caller.namespace, caller.group_id, caller.worker_id)
        if self._registry.get(key) is None or self._owner.get(instance_id) != key:
            await context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                f"instance_id={instance_id}: worker {caller.worker_id!r} does not hold this instance",
            )

    async def _load_tasks(
        self, caller: scheduler_pb2.TaskCaller, instance_id: int, context: Any
    ) -> list[scheduler_pb2.StoredTask]:
        await self._check_task_caller(caller, instance_id, context)
        page = await self._store.list_tasks(instance_id, limit=_TASKS_LOAD_LIMIT)
        if page.total == 0:
            instance = await self._store.get_instance(instance_id)
            if instance is not None and instance.retry_of is not None:
                # A retry of an instance (maxAttempt): its successful tasks are not run again.
                copied = await self._store.copy_tasks(instance.retry_of, instance_id)
                if copied:
                    log.info(
                        "instance %d: %d task(s) taken over from instance %d",
                        instance_id,
                        copied,
                        instance.retry_of,
                    )
                    page = await self._store.list_tasks(instance_id, limit=_TASKS_LOAD_LIMIT)
        return [
            scheduler_pb2.StoredTask(
                task_id=t.task_id,
                task_name=t.name,
                payload=t.payload,
                parent_id=t.parent_id,
                batch_seq=t.batch_seq,
                status=int(t.status),
                worker_addr=t.worker_addr,
                result=t.result,
                attempt=t.attempt,
            )
            for t in page.items
        ]

    async def _create_tasks(self, request: scheduler_pb2.CreateTasksRequest, context: Any) -> int:
        await self._check_task_caller(request.caller, request.instance_id, context)
        news = [
            NewTask(
                task_id=t.task_id,
                name=t.task_name,
                payload=t.payload,
                parent_id=t.parent_id,
                batch_seq=t.batch_seq,
            )
            for t in request.tasks
        ]
        return await self._store.create_tasks(request.instance_id, news)

    async def _update_tasks(self, request: scheduler_pb2.UpdateTasksRequest, context: Any) -> int:
        await self._check_task_caller(request.caller, request.instance_id, context)
        changes: list[TaskStatusChange] = []
        for group in request.groups:
            try:
                status = TaskStatus(group.status)
            except ValueError:
                await context.abort(
                    grpc.StatusCode.INVALID_ARGUMENT, f"groups.status={group.status}: not a task status (1-5)"
                )
                raise
            if group.results and len(group.results) != len(group.task_ids):
                await context.abort(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"groups.results: {len(group.results)} for {len(group.task_ids)} task id(s)",
                )
            changes.append(
                TaskStatusChange(
                    status=status,
                    task_ids=tuple(group.task_ids),
                    results=tuple(group.results),
                    worker_id=group.worker_id,
                    worker_addr=group.worker_addr,
                )
            )
        return await self._store.update_task_statuses(request.instance_id, changes)

    async def _query_tasks(
        self, caller: scheduler_pb2.TaskCaller, instance_id: int, context: Any
    ) -> scheduler_pb2.QueryTasksReply:
        await self._check_task_caller(caller, instance_id, context)
        counts = await self._store.count_tasks(instance_id)
        reply = scheduler_pb2.QueryTasksReply(counts={int(s): n for s, n in counts.items()})
        if counts.get(TaskStatus.INIT):
            waiting = await self._store.list_tasks(
                instance_id, statuses=[TaskStatus.INIT], limit=_TASKS_LOAD_LIMIT
            )
            reply.init_task_ids.extend(t.task_id for t in waiting.items)
        return reply


class _SchedulerService(scheduler_pb2_grpc.SchedulerServicer):
    """The Scheduler gRPC service: one Connect stream per worker, handled by the dispatcher."""

    def __init__(self, dispatcher: Dispatcher) -> None:
        self._dispatcher = dispatcher

    async def Connect(
        self, request_iterator: Any, context: Any
    ) -> AsyncIterator[scheduler_pb2.SchedulerMessage]:
        dispatcher = self._dispatcher
        messages: AsyncIterator[scheduler_pb2.WorkerMessage] = request_iterator.__aiter__()
        try:
            first = await asyncio.wait_for(
                anext(messages), timeout=dispatcher._heartbeat_timeout.total_seconds()
            )
        except StopAsyncIteration:
            return
        except TimeoutError:
            await context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, "no register message arrived in time")
            return
        kind = first.WhichOneof("body")
        if kind != "register":
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, f"the first message must be register, got {kind}"
            )
        await dispatcher._authenticate(first.register, context)
        session = dispatcher._new_session(first.register)
        reader: asyncio.Task[None] | None = None
        try:
            await dispatcher._attach(session, list(first.register.running_instance_ids))
            yield dispatcher._registered_message(session)
            reader = asyncio.create_task(dispatcher._read_loop(session, messages))
            while True:
                item = await session.outbox.get()
                if isinstance(item, CloseStream):
                    if item.code_name:
                        await context.abort(getattr(grpc.StatusCode, item.code_name), item.message)
                    return
                yield item
        finally:
            if reader is not None:
                reader.cancel()
            dispatcher._detach(session, grace=True)

    # -- the server-side subtask store of parallel instances -------------------------------------
    async def LoadTasks(
        self, request: scheduler_pb2.LoadTasksRequest, context: Any
    ) -> scheduler_pb2.LoadTasksReply:
        tasks = await self._dispatcher._load_tasks(request.caller, request.instance_id, context)
        return scheduler_pb2.LoadTasksReply(tasks=tasks)

    async def CreateTasks(
        self, request: scheduler_pb2.CreateTasksRequest, context: Any
    ) -> scheduler_pb2.TasksReply:
        affected = await self._dispatcher._create_tasks(request, context)
        return scheduler_pb2.TasksReply(affected=affected)

    async def UpdateTasks(
        self, request: scheduler_pb2.UpdateTasksRequest, context: Any
    ) -> scheduler_pb2.TasksReply:
        affected = await self._dispatcher._update_tasks(request, context)
        return scheduler_pb2.TasksReply(affected=affected)

    async def QueryTasks(
        self, request: scheduler_pb2.QueryTasksRequest, context: Any
    ) -> scheduler_pb2.QueryTasksReply:
        return await self._dispatcher._query_tasks(request.caller, request.instance_id, context)
