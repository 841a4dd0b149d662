"""The backfill driver: starts the instances (or workflow instances) of running backfills, in schedule
order, and records how each fire time ended.

Every scheduler replica runs one. Each cycle, for every RUNNING backfill, it first settles the fires
whose instance ended (following an instance's retries), then asks the store to start the next pending
fires the backfill's concurrency leaves room for. That start is one transaction on the backfill's row,
so replicas never start a fire time twice nor exceed the concurrency, and a restarted scheduler goes on
where the store says the backfill is. New instances go to dispatch through the same hand-over as
every other creator's; new workflow instances to the workflow engine, which runs each node for the data
time of its instance's fire. Backfill instances (trigger type 2) are not counted against the job's
maxConcurrency, so the live fires are never delayed or refused because of them.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Protocol

from sx.processors import InstanceStatus, TriggerType
from sx.processors.engine import is_killed
from sx.scheduler._clock import Clock
from sx.scheduler._loops import Loop
from sx.scheduler.jobs._timing import data_time
from sx.scheduler.store import (
    Backfill,
    BackfillFire,
    BackfillState,
    BackfillStore,
    FireState,
    Instance,
    InstanceStore,
    Job,
    JobStore,
    NewInstance,
    NewWorkflowInstance,
    Workflow,
    WorkflowStore,
)

__all__ = ["BackfillDriver", "BackfillDriverStore"]

logger = logging.getLogger("sx.scheduler.backfills")

# A failed instance whose job allows another attempt gets its retry from the lifecycle just after it
# ends; its fire is recorded failed only when no retry appeared within this long.
_RETRY_GRACE = timedelta(seconds=10)


class BackfillDriverStore(BackfillStore, JobStore, InstanceStore, WorkflowStore, Protocol):
    """What the driver reads and writes: backfills and their fires, jobs, workflows and their
    instances."""


class BackfillDriver:
    """The loop that runs backfills; ``hand_over`` gives each new instance to dispatch and
    ``start_workflow`` each new workflow instance (by id) to the workflow engine (without one, workflow
    backfills wait). ``poll`` bounds each sleep, so backfills created or advanced on another replica are
    noticed."""

    def __init__(
        self,
        store: BackfillDriverStore,
        *,
        clock: Clock,
        hand_over: Callable[[Instance], Awaitable[None]],
        start_workflow: Callable[[int], Awaitable[None]] | None = None,
        poll: float = 1.0,
        error_backoff: float = 1.0,
    ) -> None:
        if poll <= 0:
            raise ValueError(f"poll={poll!r}: must be positive")
        self._store = store
        self._clock = clock
        self._hand_over = hand_over
        self._start_workflow = start_workflow
        self._poll = timedelta(seconds=poll)
        self._loop = Loop(
            "sx-backfill-driver",
            self._cycle,
            clock=clock,
            logger=logger,
            failure="backfill cycle failed; retrying",
            error_backoff=timedelta(seconds=error_backoff),
        )

    @property
    def running(self) -> bool:
        return self._loop.running

    async def start(self) -> None:
        """Start the loop (idempotent)."""
        self._loop.start()

    async def stop(self) -> None:
        await self._loop.stop()

    def wake(self) -> None:
        """A backfill was created, or one of its instances ended: advance now."""
        self._loop.wake()

    async def on_ended(self, instance: Instance, retry: Instance | None) -> None:
        """An InstanceEvents ``ended`` listener: a backfill instance's end is settled at once."""
        if instance.trigger_type == TriggerType.DATA_RERUN:
            self.wake()

    async def _cycle(self) -> None:
        await self.advance_all()
        await self._clock.sleep_until(self._clock.now() + self._poll, self._loop.wakeup)

    async def advance_all(self) -> int:
        """One pass over the running backfills; returns how many instances it started."""
        started = 0
        for backfill_id in await self._store.running_backfill_ids():
            try:
                started += await self.advance(backfill_id)
            except Exception:
                # One broken backfill must not hold up the others.
                logger.exception("backfill %d: advancing failed; retrying next cycle", backfill_id)
        return started

    async def advance(self, backfill_id: int) -> int:
        """Settle the backfill's ended fires, start the next ones, and finish it when none are left;
        returns how many instances were started."""
        backfill = await self._store.get_backfill(backfill_id)
        if backfill is None or backfill.state != BackfillState.RUNNING:
            return 0
        if backfill.workflow_id is not None:
            started = await self._advance_workflow(backfill, backfill.workflow_id)
        else:
            assert backfill.job_id is not None  # a backfill is of a job or of a workflow
            started = await self._advance_job(backfill, backfill.job_id)
        if started is None:
            return 0
        if not started:
            current = await self._store.get_backfill(backfill_id)
            if current is not None and current.progress.pending == current.progress.running == 0:
                finished = await self._store.set_backfill_state(
                    backfill_id, BackfillState.FINISHED, only_if=BackfillState.RUNNING
                )
                if finished is not None:
                    p = finished.progress
                    logger.info(
                        "backfill %d finished: %d done, %d failed, %d skipped",
                        backfill_id,
                        p.done,
                        p.failed,
                        p.skipped,
                    )
        return started

    async def _running_fires(self, backfill: Backfill) -> list[BackfillFire]:
        limit = max(1, backfill.concurrency) + 100
        return (
            await self._store.list_backfill_fires(backfill.id, states=[FireState.RUNNING], limit=limit)
        ).items

    async def _advance_job(self, backfill: Backfill, job_id: int) -> int | None:
        job = await self._store.get_job(job_id)
        if job is None:
            return None  # deleted: its backfills went with it
        for fire in await self._running_fires(backfill):
            await self._settle(job, fire)
        created = await self._store.start_backfill_fires(
            backfill.id, lambda when: self._new_instance(job, backfill, when), self._clock.now()
        )
        for instance in created:
            logger.info(
                "backfill %d of job %d: instance %d for %s",
                backfill.id,
                job.id,
                instance.id,
                instance.schedule_time.isoformat(),
            )
            try:
                await self._hand_over(instance)
            except Exception:
                # The instance exists (WAITING) in the store; dispatch recovery picks it up from there.
                logger.exception("backfill %d: handing over instance %d failed", backfill.id, instance.id)
        return len(created)

    async def _advance_workflow(self, backfill: Backfill, workflow_id: int) -> int | None:
        workflow = await self._store.get_workflow(workflow_id)
        if workflow is None or self._start_workflow is None:
            return None
        for fire in await self._running_fires(backfill):
            assert fire.instance_id is not None  # a RUNNING fire has its instance
            wf_instance = await self._store.get_workflow_instance(fire.instance_id)
            if wf_instance is not None and not wf_instance.status.finished:
                continue
            ok = wf_instance is not None and wf_instance.status == InstanceStatus.SUCCESS
            await self._store.settle_backfill_fire(
                backfill.id,
                fire.schedule_time,
                only_if_instance=fire.instance_id,
                state=FireState.DONE if ok else FireState.FAILED,
            )
        created = await self._store.start_workflow_backfill_fires(
            backfill.id, lambda when: _new_workflow_instance(workflow, backfill, when), self._clock.now()
        )
        for wf_instance in created:
            logger.info(
                "backfill %d of workflow %d: workflow instance %d for %s",
                backfill.id,
                workflow.id,
                wf_instance.id,
                wf_instance.schedule_time.isoformat(),
            )
            try:
                await self._start_workflow(wf_instance.id)
            except Exception:
                # The workflow instance exists (WAITING); the workflow engine's recovery starts it.
                logger.exception(
                    "backfill %d: starting workflow instance %d failed", backfill.id, wf_instance.id
                )
        return len(created)

    def _new_instance(self, job: Job, backfill: Backfill, schedule_time: datetime) -> NewInstance:
        return NewInstance(
            job_id=job.id,
            namespace=job.namespace,
            group_id=job.group_id,
            status=InstanceStatus.WAITING,
            trigger_type=TriggerType.DATA_RERUN,
            time_type=job.spec.schedule.time_type,
            schedule_time=schedule_time,
            data_time=data_time(job.spec, schedule_time),
            instance_parameters=backfill.instance_parameters,
        )

    async def _settle(self, job: Job, fire: BackfillFire) -> None:
        if fire.instance_id is None:
            return
        instance = await self._store.get_instance(fire.instance_id)
        state: FireState | None
        follow: int | None = None
        if instance is None:
            state = FireState.FAILED  # removed from the history before it was seen ending
        elif not instance.status.finished:
            return
        elif instance.status == InstanceStatus.SUCCESS:
            state = FireState.DONE
        else:
            retry = await self._store.find_retry(instance.id)
            if retry is not None:
                state, follow = FireState.RUNNING, retry.id
            elif self._may_still_retry(job, instance):
                return
            else:
                state = FireState.FAILED
        await self._store.settle_backfill_fire(
            fire.backfill_id,
            fire.schedule_time,
            only_if_instance=fire.instance_id,
            state=state,
            instance_id=follow,
        )

    def _may_still_retry(self, job: Job, instance: Instance) -> bool:
        if instance.status != InstanceStatus.FAILED or is_killed(instance.result):
            return False
        if instance.attempt >= job.spec.max_attempt:
            return False
        ended = instance.end_time or instance.created_at
        return self._clock.now() - ended < _RETRY_GRACE


def _new_workflow_instance(
    workflow: Workflow, backfill: Backfill, schedule_time: datetime
) -> NewWorkflowInstance:
    return NewWorkflowInstance(
        workflow_id=workflow.id,
        namespace=workflow.namespace,
        group_id=workflow.group_id,
        status=InstanceStatus.WAITING,
        trigger_type=TriggerType.DATA_RERUN,
        schedule_time=schedule_time,
        nodes=workflow.definition.nodes,
        edges=workflow.definition.edges,
        instance_parameters=backfill.instance_parameters,
    )
