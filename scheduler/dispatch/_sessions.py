"""Worker stream sessions: a registered worker's session made live (taking back the instances it still
runs) and ended, and liveness: dropping silent workers and losing the orphans whose worker did not come
back (`_orphans`). Registration is `_registration`; reading the stream, `_stream_reader`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Protocol

from sx.processors import InstanceStatus
from sx.processors.engine import ACTIVE_INSTANCE_STATUSES
from sx.scheduler._clock import Clock
from sx.scheduler.dispatch._orphans import OrphanedInstances
from sx.scheduler.dispatch._ownership import GroupOwnership
from sx.scheduler.dispatch._registry import Assignment, WorkerSession
from sx.scheduler.dispatch._reports import InstanceReports
from sx.scheduler.dispatch._state import DispatchState, forget_task_files_message, kill_message, same_group
from sx.scheduler.store import FencedError, InstanceChange, InstanceStore, JobStore

__all__ = ["SessionStore", "WorkerSessions"]


class SessionStore(JobStore, InstanceStore, Protocol):
    """What worker sessions read and write: the instances a worker holds, and their jobs (`_orphans`)."""


log = logging.getLogger("sx.scheduler.dispatch")


class WorkerSessions:
    """The workers' live sessions: what each holds, and who is gone."""

    def __init__(
        self,
        store: SessionStore,
        *,
        clock: Clock,
        state: DispatchState,
        reports: InstanceReports,
        heartbeat_interval: float,
        heartbeat_timeout: timedelta,
        ownership: GroupOwnership,
        batch_resume_wait: timedelta = timedelta(seconds=30),
    ) -> None:
        self._store = store
        self._ownership = ownership
        self._clock = clock
        self._state = state
        self._heartbeat_interval = heartbeat_interval
        self._heartbeat_timeout = heartbeat_timeout
        self.orphans = OrphanedInstances(
            store,
            clock=clock,
            state=state,
            reports=reports,
            heartbeat_timeout=heartbeat_timeout,
            batch_resume_wait=batch_resume_wait,
        )
        """The instances of gone workers, until they come back or are lost."""

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
            self.orphans.orphan(old, deadline=now + self._heartbeat_timeout)
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
            await self.orphans.lose(key, orphans)
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
            self.orphans.orphan(session, deadline=deadline)
        elif session.key not in state.orphans:
            state.delivered.pop(session.key, None)
        else:
            state.liveness_wake.set()

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
        return await self.orphans.lose_overdue(now=now, next_at=next_at)
