"""Worker stream sessions: registration, attach and detach, orphans, liveness, and resuming lost masters.

A worker whose stream breaks keeps its instances for one heartbeat timeout (they become its *orphans*):
if it reconnects and lists them in ``running_instance_ids`` they stay its own. The ones it does not
list, or all of them when it has not come back by the deadline, are lost: accepted ones fail, ones it
never accepted go back to WAITING. A lost batch-mode instance is submitted again under its id instead,
up to ``MAX_MASTER_RESUMES`` times.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import AsyncIterator, Iterable
from datetime import datetime, timedelta
from typing import Any, Protocol

import grpc

from sx.processors import ExecuteMode, InstanceStatus
from sx.processors.engine import ACTIVE_INSTANCE_STATUSES
from sx.protos import new_nonce, registration_proof
from sx.protos.v1 import scheduler_pb2
from sx.scheduler._clock import Clock
from sx.scheduler.dispatch._log_writer import InstanceLogWriter
from sx.scheduler.dispatch._ownership import GroupOwnership
from sx.scheduler.dispatch._registry import Assignment, WorkerKey, WorkerSession
from sx.scheduler.dispatch._reports import InstanceReports
from sx.scheduler.dispatch._state import (
    DispatchState,
    Orphans,
    forget_task_files_message,
    kill_message,
    mark_draining,
    redirect_message,
    same_group,
)
from sx.scheduler.store import (
    AccessStore,
    FencedError,
    Group,
    Instance,
    InstanceChange,
    InstanceStore,
    JobStore,
)

__all__ = ["MAX_MASTER_RESUMES", "SessionStore", "WorkerSessions"]


class SessionStore(AccessStore, JobStore, InstanceStore, Protocol):
    """What worker sessions read and write: the group a worker registers in, and the instances it holds."""


log = logging.getLogger("sx.scheduler.dispatch")

MAX_MASTER_RESUMES = 3
"""Times a batch instance whose master was lost is submitted again before it fails."""
_FINAL_STATUSES = frozenset({int(InstanceStatus.SUCCESS), int(InstanceStatus.FAILED)})
# Worker messages received but not yet applied, per stream; and applied together at most.
_INBOX_SIZE = 1024
_BATCH_LIMIT = 256


class WorkerSessions:
    """The workers' Connect streams: who may register, what each holds, and who is gone."""

    def __init__(
        self,
        store: SessionStore,
        *,
        clock: Clock,
        state: DispatchState,
        reports: InstanceReports,
        heartbeat_interval: float,
        heartbeat_timeout: timedelta,
        scheduler_id: str,
        ownership: GroupOwnership,
        batch_resume_wait: timedelta = timedelta(seconds=30),
        logs: InstanceLogWriter | None = None,
    ) -> None:
        self._store = store
        self._ownership = ownership
        self._logs = logs
        self._clock = clock
        self._state = state
        self._reports = reports
        self._heartbeat_interval = heartbeat_interval
        self._batch_resume_wait = batch_resume_wait
        self._heartbeat_timeout = heartbeat_timeout
        self._scheduler_id = scheduler_id

    @property
    def register_timeout(self) -> float:
        """Seconds a new stream has to send its register message."""
        return self._heartbeat_timeout.total_seconds()

    # -- registration --------------------------------------------------------------------------
    # Challenge-response: the worker proves the group's app key without sending it (sx.protos._auth).
    async def challenge(self, register: scheduler_pb2.Register, context: Any) -> scheduler_pb2.Challenge:
        """Abort the stream unless the register message is complete and names a group; otherwise the
        challenge (a fresh nonce) the worker must answer with a proof of the group's app key."""
        for name in ("namespace", "group_id", "worker_id", "address"):
            if not getattr(register, name):
                await context.abort(
                    grpc.StatusCode.INVALID_ARGUMENT, f"register.{name} is empty: every worker must send it"
                )
        if not register.client_nonce:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                "register.client_nonce is empty: the worker predates challenge-response registration"
                " (upgrade it to this scheduler's version)",
            )
        await self._group_of(register, context)
        return scheduler_pb2.Challenge(server_nonce=new_nonce())

    async def authenticate(
        self,
        register: scheduler_pb2.Register,
        challenge: scheduler_pb2.Challenge,
        answer: scheduler_pb2.ChallengeAnswer,
        context: Any,
    ) -> None:
        """Abort the stream unless ``answer`` proves the group's app key for this register message and
        this challenge."""
        group = await self._group_of(register, context)
        where = f"group {register.group_id!r} in namespace {register.namespace!r}"
        if not answer.proof:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, f"app key for {where} is missing")
        expected = registration_proof(group.app_key, register, challenge.server_nonce)
        if not hmac.compare_digest(answer.proof, expected):
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, f"app key for {where} is wrong")

    async def _group_of(self, register: scheduler_pb2.Register, context: Any) -> Group:
        group = await self._store.get_group(register.namespace, register.group_id)
        if group is None:
            where = f"group {register.group_id!r} in namespace {register.namespace!r}"
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, f"{where} does not exist")
            raise AssertionError("abort raises")
        return group

    async def redirect(self, register: scheduler_pb2.Register) -> scheduler_pb2.SchedulerMessage | None:
        """None when this scheduler dispatches the worker's group (taking it now if it should and no
        replica holds it); else the Redirect to the replica that does."""
        group = (register.namespace, register.group_id)
        if await self._ownership.claim(group):
            return None
        address = self._ownership.owner_address(group)
        reason = f"group {register.group_id!r} of namespace {register.namespace!r} is dispatched by " + (
            address or "no scheduler yet"
        )
        return redirect_message(address, reason)

    def new_session(self, register: scheduler_pb2.Register) -> WorkerSession:
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
            takes_batches=register.takes_batches,
        )

    def registered_message(self, session: WorkerSession) -> scheduler_pb2.SchedulerMessage:
        return scheduler_pb2.SchedulerMessage(
            registered=scheduler_pb2.Registered(
                worker_id=session.worker_id,
                heartbeat_interval_ms=int(self._heartbeat_interval * 1000),
                heartbeat_timeout_ms=int(self._heartbeat_timeout.total_seconds() * 1000),
                scheduler_id=self._scheduler_id,
                takes_batches=True,
            )
        )

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

    def close_all(self, message: str) -> None:
        """End every worker stream (UNAVAILABLE)."""
        for session in self._state.registry.sessions():
            session.close("UNAVAILABLE", message)

    # -- attach and detach ---------------------------------------------------------------------
    async def attach(
        self, session: WorkerSession, running_instance_ids: list[int], task_file_ids: Iterable[int] = ()
    ) -> None:
        """Make the session live and give it back the instances it says it still runs; note the batch task
        files it holds (where those instances resume), or tell it to remove the ones of ended instances."""
        state = self._state
        key = session.key
        now = self._clock.now()
        await self._note_task_files(session, task_file_ids)
        old = state.registry.add(session)
        if old is not None:
            # The same worker opened a new stream before the old one was seen to break.
            self._orphan(old, deadline=now + self._heartbeat_timeout)
            old.close("ABORTED", "replaced by a newer stream from the same worker")
        for instance_id in running_instance_ids:
            orphans = state.orphans.get(key)
            assignment = orphans.assigned.pop(instance_id, None) if orphans is not None else None
            if assignment is not None:
                assignment.accepted = True
                session.assigned[instance_id] = assignment
                state.owner[instance_id] = key
                if assignment.kill_reason is not None:
                    session.send(kill_message(instance_id, assignment.job_id, assignment.kill_reason))
                continue
            instance = await self._store.get_instance(instance_id)
            if instance is None or instance.status.finished:
                session.send(kill_message(instance_id, 0, "the instance has already finished"))
                continue
            if not same_group(session, instance):
                session.send(kill_message(instance_id, instance.job_id, "not an instance of this group"))
                continue
            # Known elsewhere (or not at all, after a restart): this worker runs it, so it is its own.
            state.release(instance_id)
            state.waiting.pop(instance_id, None)
            session.assigned[instance_id] = Assignment(instance_id, instance.job_id, accepted=True)
            state.owner[instance_id] = key
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
                fence=self._ownership.fence(),
            )
        orphans = state.orphans.pop(key, None)
        if orphans is not None and orphans.assigned:
            # The worker has just listed all it runs or still has to report: whatever else it held is
            # gone now, so nothing waits a heartbeat timeout (holding its job's maxConcurrency) for it.
            log.warning(
                "worker %s came back without %d instance(s) it held: %s",
                session.worker_id,
                len(orphans.assigned),
                sorted(orphans.assigned),
            )
            await self._lose(key, orphans)
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
        state.dispatch_wake.set()
        state.liveness_wake.set()

    async def _note_task_files(self, session: WorkerSession, instance_ids: Iterable[int]) -> None:
        state = self._state
        stale: list[int] = []
        for instance_id in instance_ids:
            instance = await self._store.get_instance(instance_id)
            if instance is None or instance.status.finished or not same_group(session, instance):
                stale.append(instance_id)
            else:
                state.task_files.setdefault(instance_id, set()).add(session.key)
        if stale:
            session.send(forget_task_files_message(stale))

    def _orphan(self, session: WorkerSession, *, deadline: datetime) -> None:
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

    def detach(self, session: WorkerSession, *, grace: bool) -> None:
        """The session's stream ended (or is being ended): it takes no more work."""
        state = self._state
        session.closed = True
        if not state.registry.remove(session):
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
        elif session.key not in state.orphans:
            state.delivered.pop(session.key, None)
        else:
            state.liveness_wake.set()

    # -- the stream's messages -----------------------------------------------------------------
    async def read_loop(
        self, session: WorkerSession, messages: AsyncIterator[scheduler_pb2.WorkerMessage]
    ) -> None:
        """Apply the worker's messages until its stream ends, then ask the stream to close. The messages
        that arrived while the previous ones were applied are applied together (`_apply`)."""
        close = ("", "")
        inbox: asyncio.Queue[scheduler_pb2.WorkerMessage | None] = asyncio.Queue(_INBOX_SIZE)
        receiver = asyncio.create_task(self._receive(messages, inbox), name="sx-worker-stream-receive")
        try:
            while True:
                first = await inbox.get()
                if first is None:
                    receiver.result()  # raises what broke the stream; None when the worker ended it
                    break
                batch = [first]
                while len(batch) < _BATCH_LIMIT and not inbox.empty():
                    message = inbox.get_nowait()
                    if message is None:
                        inbox.put_nowait(None)  # the end, seen after this batch
                        break
                    batch.append(message)
                if session.closed:
                    break
                session.last_seen = self._clock.now()
                await self._apply(session, batch)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the stream broke, or the store failed: the worker reconnects and re-sends
            if session.closed:
                return  # we ended it ourselves
            if isinstance(exc, FencedError):
                self._ownership.suspect()  # its report is not acknowledged: the worker re-sends it
            log.warning("stream of worker %s ended: %r", session.worker_id, exc)
            close = ("UNAVAILABLE", f"stream error: {exc}")
        finally:
            receiver.cancel()
            if receiver.done() and not receiver.cancelled():
                receiver.exception()  # retrieved: what broke the stream was logged above, or is moot
        if not session.closed:
            session.close(*close)

    @staticmethod
    async def _receive(
        messages: AsyncIterator[scheduler_pb2.WorkerMessage],
        inbox: asyncio.Queue[scheduler_pb2.WorkerMessage | None],
    ) -> None:
        """Move the stream's messages to ``inbox`` (bounded: a slow store slows the worker's stream
        down), then None when the stream ends or breaks (the task then holds what broke it)."""
        try:
            async for message in messages:
                if message.WhichOneof("body") == "batch":
                    for inner in message.batch.messages:
                        await inbox.put(inner)
                else:
                    await inbox.put(message)
        except asyncio.CancelledError:
            raise
        except Exception:
            await inbox.put(None)
            raise
        await inbox.put(None)

    async def _apply(self, session: WorkerSession, batch: list[scheduler_pb2.WorkerMessage]) -> None:
        """Apply messages in order; runs of reports and submit replies go to the store together."""
        pending: list[scheduler_pb2.InstanceReport | scheduler_pb2.SubmitReply] = []
        for message in batch:
            kind = message.WhichOneof("body")
            if kind == "report":
                pending.append(message.report)
                continue
            if kind == "submit_reply":
                pending.append(message.submit_reply)
                continue
            await self._apply_instance_messages(session, pending)
            pending = []
            if kind == "heartbeat":
                self._on_heartbeat(session, message.heartbeat)
            elif kind == "log_batch":
                if self._logs is not None:
                    key = session.key
                    self._logs.offer(key.namespace, key.group_id, key.worker_id, message.log_batch)
            elif kind == "deregister":
                log.info("worker %s deregistered: %s", session.worker_id, message.deregister.reason)
                session.accepting = False
            else:
                log.warning("worker %s sent an unexpected %s message; ignored", session.worker_id, kind)
        await self._apply_instance_messages(session, pending)

    async def _apply_instance_messages(
        self, session: WorkerSession, items: list[scheduler_pb2.InstanceReport | scheduler_pb2.SubmitReply]
    ) -> None:
        if not items:
            return
        if self._logs is not None and any(
            isinstance(item, scheduler_pb2.InstanceReport) and item.status in _FINAL_STATUSES
            for item in items
        ):
            # The worker sent the instances' lines first: stored before they read as ended, so a
            # reader that sees one ended sees them.
            await self._logs.flush()
        await self._reports.on_batch(session, items)

    def _on_heartbeat(self, session: WorkerSession, heartbeat: scheduler_pb2.Heartbeat) -> None:
        session.running = heartbeat.running
        if heartbeat.capacity > 0 and heartbeat.capacity != session.capacity:
            session.capacity = heartbeat.capacity
            self._state.dispatch_wake.set()
        session.cpu_load1 = heartbeat.cpu_load1
        session.rss_bytes = heartbeat.rss_bytes
        if heartbeat.draining:
            mark_draining(session)

    # -- liveness ------------------------------------------------------------------------------
    async def liveness_loop(self) -> None:
        """Drop silent workers and lose the orphans whose worker did not come back, until cancelled."""
        wake = self._state.liveness_wake
        while True:
            wake.clear()
            try:
                next_at = await self._check_liveness()
            except asyncio.CancelledError:
                raise
            except FencedError as exc:
                log.warning("liveness pass refused: %s", exc)
                self._ownership.suspect()
                next_at = self._clock.now() + timedelta(seconds=1)
            except Exception:
                log.exception("liveness pass failed; retrying")
                next_at = self._clock.now() + timedelta(seconds=1)
            await self._clock.sleep_until(next_at, wake)

    async def _check_liveness(self) -> datetime:
        state = self._state
        now = self._clock.now()
        next_at = now + timedelta(seconds=self._heartbeat_interval)
        for session in list(state.registry.sessions()):
            expiry = session.last_seen + self._heartbeat_timeout
            if expiry <= now:
                seconds = self._heartbeat_timeout.total_seconds()
                log.warning("worker %s silent for %ss: dropped", session.worker_id, seconds)
                session.close("UNAVAILABLE", f"no message from worker {session.worker_id} for {seconds}s")
                self.detach(session, grace=False)
            else:
                next_at = min(next_at, expiry)
        for key, orphans in list(state.orphans.items()):
            if orphans.deadline > now:
                next_at = min(next_at, orphans.deadline)
                continue
            del state.orphans[key]
            if state.registry.get(key) is None:
                state.delivered.pop(key, None)
            await self._lose(key, orphans)
        return next_at

    async def _lose(self, key: WorkerKey, orphans: Orphans) -> None:
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
