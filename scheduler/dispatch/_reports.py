"""What a worker's report or submit reply does to an instance, and the other status writes of dispatch.

Every write is a compare-and-set on the instance's status (``only_if_status``), so a late or repeated
report never changes a finished instance. An instance this dispatcher finishes is passed to
``on_finished`` once, after its final status is stored.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime

from sx.processors import InstanceStatus
from sx.processors.engine import ACTIVE_INSTANCE_STATUSES
from sx.protos.v1 import scheduler_pb2
from sx.scheduler._clock import Clock
from sx.scheduler._crash_points import crash_point
from sx.scheduler.dispatch._ownership import GroupOwnership
from sx.scheduler.dispatch._registry import Assignment, WorkerSession
from sx.scheduler.dispatch._state import DispatchState, kill_message, mark_draining, same_group
from sx.scheduler.store import Instance, InstanceChange, InstanceStore

__all__ = ["InstanceReports", "OnFinished"]


log = logging.getLogger("sx.scheduler.dispatch")

# Delivery ids remembered per worker; the status compare-and-set protects finals beyond this window.
_DELIVERY_MEMORY = 4096

OnFinished = Callable[[Instance, bool], Awaitable[None]]


def _ms_to_datetime(ms: int) -> datetime | None:
    return datetime.fromtimestamp(ms / 1000, UTC) if ms > 0 else None


class InstanceReports:
    """Applies reports and submit replies to instances; fails, finishes and re-queues instances.

    ``on_finished(instance, system_failure)`` is called once per instance finished here.
    """

    def __init__(
        self,
        store: InstanceStore,
        *,
        clock: Clock,
        state: DispatchState,
        on_finished: OnFinished,
        ownership: GroupOwnership,
    ) -> None:
        self._store = store
        self._ownership = ownership
        self._clock = clock
        self._state = state
        self._on_finished = on_finished

    async def on_batch(
        self,
        session: WorkerSession,
        items: Sequence[scheduler_pb2.InstanceReport | scheduler_pb2.SubmitReply],
    ) -> None:
        """Apply the reports and submit replies a worker sent back to back, in order, with one store
        write for the accepted submits and one for the final reports of the run of them that `_Batch`
        can group (each instance's own messages keep their order: a submit reply, its RUNNING report,
        its final report). Anything else is applied alone, after what was grouped before it."""
        batch = _Batch(self, session)
        for item in items:
            if isinstance(item, scheduler_pb2.SubmitReply):
                if not batch.add_submit_reply(item):
                    await batch.flush()
                    await self.on_submit_reply(session, item)
            elif not batch.add_report(item):
                await batch.flush()
                await self.on_report(session, item)
        await batch.flush()

    async def on_report(self, session: WorkerSession, report: scheduler_pb2.InstanceReport) -> None:
        """Apply one report (once per delivery id) and acknowledge it."""
        crash_point("dispatch.report")
        applied = self._state.delivered.setdefault(session.key, OrderedDict())
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
                self._state.tracing.reported(report, session.worker_id)
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

    async def on_submit_reply(self, session: WorkerSession, reply: scheduler_pb2.SubmitReply) -> None:
        """Accepted: the instance runs there. Refused: queue it again for another worker."""
        state = self._state
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
            mark_draining(session)
        if session.assigned.get(instance_id) is None:
            return
        state.release(instance_id)
        if not reply.draining:  # a draining worker refuses everything: no verdict on the instance
            state.refused.setdefault(instance_id, {})[session.worker_id] = reply.message
        instance = await self._store.get_instance(instance_id)
        if instance is not None and not instance.status.finished:
            state.enqueue(instance, force=True)

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
        state = self._state
        if instance_id not in session.assigned:
            # Held elsewhere (an orphan record, the waiting set after a restart): the worker's word wins,
            # within its own namespace and group.
            instance = await self._store.get_instance(instance_id)
            if instance is not None and not same_group(session, instance):
                session.send(kill_message(instance_id, instance.job_id, "not an instance of this group"))
                return
            if instance_id not in session.assigned:  # (it may have been assigned during the read)
                state.release(instance_id)
                state.waiting.pop(instance_id, None)
                session.assigned[instance_id] = Assignment(
                    instance_id, instance.job_id if instance else 0, accepted=True
                )
                state.owner[instance_id] = session.key
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
            fence=self._ownership.fence(),
        )
        await self._running_stored(session, instance_id, assignment, stored=updated is not None)

    async def _finish_from_report(
        self, session: WorkerSession, report: scheduler_pb2.InstanceReport, status: InstanceStatus
    ) -> None:
        state = self._state
        instance_id = report.instance_id
        owner = state.owner.get(instance_id)
        if owner is not None and owner != session.key:
            # A late report, e.g. from a master declared lost whose instance another worker now runs.
            log.warning(
                "final report for instance %d from worker %s ignored: worker %s holds it",
                instance_id,
                session.worker_id,
                owner.worker_id,
            )
            session.send(kill_message(instance_id, 0, f"the instance is held by worker {owner.worker_id}"))
            return
        if owner is None:
            instance = await self._store.get_instance(instance_id)
            if instance is None or not same_group(session, instance):
                log.warning(
                    "final report for instance %d from worker %s ignored: not an instance of its group",
                    instance_id,
                    session.worker_id,
                )
                return
            if state.owner.get(instance_id) not in (None, session.key):
                return  # claimed by another worker during the read; its report decides
        state.release(instance_id)
        state.forget(instance_id)
        updated = await self._store.update_instance(
            instance_id,
            self._final_change(session, report, status),
            only_if_status=ACTIVE_INSTANCE_STATUSES,
            fence=self._ownership.fence(),
        )
        state.dispatch_wake.set()  # a slot on this worker is free
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

    def _final_change(
        self, session: WorkerSession, report: scheduler_pb2.InstanceReport, status: InstanceStatus
    ) -> InstanceChange:
        """What a worker's final report stores on its instance."""
        return InstanceChange(
            status=status,
            start_time=_ms_to_datetime(report.start_time_ms),
            end_time=_ms_to_datetime(report.end_time_ms) or self._clock.now(),
            worker_id=session.worker_id,
            worker_addr=session.address,
            executor=session.executor,
            result=report.result,
            progress=report.progress,
        )

    async def _finish_reported(
        self, session: WorkerSession, reports: list[tuple[scheduler_pb2.InstanceReport, InstanceStatus]]
    ) -> None:
        """Store the final status of instances ``session`` holds, reported by it, in one write; then
        notify each."""
        state = self._state
        changes = []
        for report, status in reports:
            state.release(report.instance_id)
            state.forget(report.instance_id)
            changes.append((report.instance_id, self._final_change(session, report, status)))
        updated = await self._store.update_instances(
            changes, only_if_status=ACTIVE_INSTANCE_STATUSES, fence=self._ownership.fence()
        )
        state.dispatch_wake.set()  # slots on this worker are free
        for report, status in reports:
            state.tracing.reported(report, session.worker_id)
            instance = updated.get(report.instance_id)
            if instance is None:
                log.info(
                    "late report for instance %d (already finished) from %s",
                    report.instance_id,
                    session.worker_id,
                )
                continue
            log.info(
                "instance %d %s on worker %s: %s",
                report.instance_id,
                status.name,
                session.worker_id,
                report.result[:200],
            )
            await self._notify(instance, system_failure=False)

    async def _store_running(self, session: WorkerSession, accepted: list[int]) -> None:
        """Record RUNNING, in one write, the instances ``session`` accepted (their submit replies)."""
        now = self._clock.now()
        change = InstanceChange(
            status=InstanceStatus.RUNNING,
            start_time=now,
            worker_id=session.worker_id,
            worker_addr=session.address,
            executor=session.executor,
        )
        updated = await self._store.update_instances(
            [(instance_id, change) for instance_id in accepted],
            only_if_status=(InstanceStatus.WAITING, InstanceStatus.READY),
            fence=self._ownership.fence(),
        )
        for instance_id in accepted:
            assignment = session.assigned.get(instance_id)
            await self._running_stored(
                session, instance_id, assignment, stored=updated.get(instance_id) is not None
            )

    async def _running_stored(
        self, session: WorkerSession, instance_id: int, assignment: Assignment | None, *, stored: bool
    ) -> None:
        """After a RUNNING write: note it (logged once), or, when the write found the instance no
        longer waiting, kill it on the worker if it has finished meanwhile."""
        if stored:
            if assignment is not None:
                if not assignment.running_stored:
                    log.info("instance %d running on worker %s", instance_id, session.worker_id)
                assignment.running_stored = True
            return
        current = await self._store.get_instance(instance_id)
        if current is None or current.status.finished:
            # Killed or finished while the submit travelled: the worker must not keep running it.
            self._state.release(instance_id)
            self._state.forget(instance_id)
            job_id = assignment.job_id if assignment is not None else 0
            session.send(kill_message(instance_id, job_id, "the instance has already finished"))

    async def back_to_waiting(
        self, instance_id: int, only_if_status: tuple[InstanceStatus, ...]
    ) -> Instance | None:
        """Put an instance whose worker was lost back to WAITING and queue it for dispatch."""
        updated = await self._store.update_instance(
            instance_id,
            InstanceChange(status=InstanceStatus.WAITING, worker_id="", worker_addr="", executor=""),
            only_if_status=only_if_status,
            fence=self._ownership.fence(),
        )
        if updated is not None:
            self._state.enqueue(updated)
        return updated

    async def fail(
        self, instance_id: int, result: str, *, system_failure: bool, fenced: bool = True
    ) -> Instance | None:
        """Finish an instance FAILED with this result (unless it already finished) and notify. Unfenced
        only for an instance of a group no replica holds (a stop asked for meanwhile)."""
        self._state.forget(instance_id)
        updated = await self._store.update_instance(
            instance_id,
            InstanceChange(status=InstanceStatus.FAILED, result=result, end_time=self._clock.now()),
            only_if_status=ACTIVE_INSTANCE_STATUSES,
            fence=self._ownership.fence() if fenced else None,
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


class _Batch:
    """The reports and submit replies of one worker's batch that go to the store together: accepted
    submits (RUNNING) and final reports of instances the worker holds. Their acknowledgements go out
    after the writes."""

    def __init__(self, reports: InstanceReports, session: WorkerSession) -> None:
        self._reports = reports
        self._session = session
        self._accepted: list[int] = []
        self._running: set[int] = set()
        """Instances whose RUNNING write is in this batch (their RUNNING report adds nothing)."""
        self._finals: list[tuple[scheduler_pb2.InstanceReport, InstanceStatus]] = []
        self._finishing: set[int] = set()
        """The instances of ``_finals``."""
        self._acks: list[str] = []

    def add_submit_reply(self, reply: scheduler_pb2.SubmitReply) -> bool:
        """Take an accepted submit of an instance the worker was assigned; False: apply it alone."""
        assignment = self._session.assigned.get(reply.instance_id)
        if not reply.accepted or assignment is None:
            return False
        assignment.accepted = True
        if not assignment.running_stored and reply.instance_id not in self._running:
            self._accepted.append(reply.instance_id)
            self._running.add(reply.instance_id)
        return True

    def add_report(self, report: scheduler_pb2.InstanceReport) -> bool:
        """Take a RUNNING report that adds nothing, or the first final report of an instance the worker
        holds; False: apply it alone (a repeated delivery too)."""
        session = self._session
        state = self._reports._state
        delivery_id = report.delivery_id
        if not delivery_id or delivery_id in state.delivered.get(session.key, ()):
            return False
        instance_id = report.instance_id
        if report.status == InstanceStatus.RUNNING:
            assignment = session.assigned.get(instance_id)
            if report.progress or assignment is None:
                return False
            if not assignment.running_stored and instance_id not in self._running:
                return False
        elif report.status in (InstanceStatus.SUCCESS, InstanceStatus.FAILED):
            if state.owner.get(instance_id) != session.key:
                return False
            if instance_id in self._finishing:
                return False
            self._finishing.add(instance_id)
            self._finals.append((report, InstanceStatus(report.status)))
        else:
            return False
        self._acks.append(delivery_id)
        return True

    async def flush(self) -> None:
        """Write what was taken, then acknowledge its reports."""
        session = self._session
        reports = self._reports
        accepted, finals, acks = self._accepted, self._finals, self._acks
        self._accepted, self._finals, self._acks = [], [], []
        self._running, self._finishing = set(), set()
        if accepted:
            await reports._store_running(session, accepted)
        if finals:
            crash_point("dispatch.report")
            await reports._finish_reported(session, finals)
        if not acks:
            return
        applied = reports._state.delivered.setdefault(session.key, OrderedDict())
        for delivery_id in acks:
            applied[delivery_id] = None
            session.send(scheduler_pb2.SchedulerMessage(ack=scheduler_pb2.ReportAck(delivery_id=delivery_id)))
        while len(applied) > _DELIVERY_MEMORY:
            applied.popitem(last=False)
