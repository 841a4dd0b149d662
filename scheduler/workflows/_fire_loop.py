"""The workflows' time trigger: cron and fix_rate workflows start an instance when they are due.

The loop sleeps until the earliest persisted next fire time of a workflow (or ``idle_poll``), claims
each due workflow's fire with a compare-and-set on that time (so replicas sharing a store fire it
once) and advances the new instance. A fire missed by more than ``misfire_grace`` (the scheduler was
down) runs once, now. Every ``recover_interval`` seconds, and at start, it has the engine recover the
workflow instances left behind.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta, tzinfo

from sx.processors import TriggerType
from sx.scheduler._clock import Clock
from sx.scheduler._errors import BadRequest
from sx.scheduler._loops import Loop
from sx.scheduler.store import WorkflowFire, WorkflowStore
from sx.scheduler.workflows._definition import next_workflow_fire
from sx.scheduler.workflows._engine import WorkflowEngine, new_workflow_instance

__all__ = ["WorkflowFireLoop"]

log = logging.getLogger("sx.scheduler.workflows")

_FIRE_BATCH = 100


class WorkflowFireLoop:
    """Fires due workflows into ``engine``; ``default_tz`` is the zone of workflows without their own."""

    def __init__(
        self,
        store: WorkflowStore,
        *,
        clock: Clock,
        engine: WorkflowEngine,
        default_tz: tzinfo,
        idle_poll: float = 2.0,
        misfire_grace: float = 5.0,
        recover_interval: float = 30.0,
    ) -> None:
        if recover_interval <= 0:
            raise ValueError(f"recover_interval={recover_interval!r}: must be more than 0 seconds")
        self._store = store
        self._clock = clock
        self._engine = engine
        self._default_tz = default_tz
        self._idle_poll = timedelta(seconds=idle_poll)
        self._grace = timedelta(seconds=misfire_grace)
        self._recover_interval = timedelta(seconds=recover_interval)
        self._next_recover = clock.now()
        self._loop = Loop(
            "sx-workflow-trigger",
            self._cycle,
            clock=clock,
            logger=log,
            failure="workflow trigger cycle failed; retrying",
            error_backoff=timedelta(seconds=1),
        )

    @property
    def running(self) -> bool:
        return self._loop.running

    def wake(self) -> None:
        """A workflow's next fire time changed: look again now."""
        self._loop.wake()

    async def start(self) -> None:
        """Advance the workflow instances left behind, then start the loop (idempotent)."""
        if self.running:
            return
        try:
            await self._recover()
        except Exception:
            log.exception("workflow recovery failed; the trigger loop tries again")
        self._loop.start()

    async def stop(self) -> None:
        await self._loop.stop()

    async def _recover(self) -> None:
        self._next_recover = self._clock.now() + self._recover_interval
        await self._engine.recover()

    async def _cycle(self) -> None:
        now = self._clock.now()
        due = await self._store.next_workflow_due_time()
        if due is not None and due <= now:
            await self.fire_due(now)
            return
        if now >= self._next_recover:
            await self._recover()
        limit = min(now + self._idle_poll, self._next_recover)
        if due is not None:
            limit = min(limit, due)
        await self._clock.sleep_until(limit, self._loop.wakeup)

    async def fire_due(self, now: datetime) -> int:
        """Start an instance of every workflow due at ``now``; returns how many were claimed."""
        claimed = 0
        for workflow in await self._store.due_workflows(now, _FIRE_BATCH):
            due = workflow.next_fire_time
            assert due is not None
            # A fire missed by more than the grace (the scheduler was down) runs once, now.
            after = now if now - due > self._grace else due
            try:
                following = next_workflow_fire(workflow.definition, after, default_tz=self._default_tz)
            except BadRequest:
                log.exception("workflow %d: cannot compute its next fire time; parked", workflow.id)
                following = None
            wf_instance = await self._store.claim_workflow_fire(
                WorkflowFire(
                    workflow_id=workflow.id,
                    due=due,
                    next_fire_time=following,
                    instance=new_workflow_instance(workflow, due, TriggerType.SCHEDULED, ""),
                )
            )
            if wf_instance is None:
                continue
            claimed += 1
            log.info("workflow %d fired: workflow instance %d", workflow.id, wf_instance.id)
            try:
                await self._engine.advance(wf_instance.id)
            except Exception:
                log.exception("workflow instance %d could not start its nodes", wf_instance.id)
        return claimed
