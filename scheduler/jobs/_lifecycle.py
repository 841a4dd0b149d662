"""What happens around an instance's end: retries, second_delay re-arming, alarms, history, timeouts.

Whoever finishes an instance (dispatch on a worker's report, the API on a kill) calls
``Lifecycle.instance_finished`` once the store holds its final status. A watcher loop finds running
instances past their job's timeout, alarms once, and kills them when the job asks for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta, tzinfo
from typing import Protocol

from sx.processors._enums import InstanceStatus, TimeType, TriggerType
from sx.processors._invoke import is_killed
from sx.scheduler._clock import Clock
from sx.scheduler.jobs._alarms import AlarmRouter
from sx.scheduler.jobs._timing import schedule_seconds
from sx.scheduler.jobs._triggers import TriggerEngine
from sx.scheduler.store._store import DuplicateError, Instance, InstanceChange, Job, NewInstance, Store

__all__ = ["Lifecycle"]

logger = logging.getLogger("sx.scheduler.lifecycle")

OnCreated = Callable[[list[Instance]], Awaitable[None]]
StopInstance = Callable[[Instance, str], Awaitable[object]]


class WorkflowNodeHooks(Protocol):
    """What the workflow engine needs to hear about a finished instance of a workflow node."""

    async def may_retry(self, instance: Instance) -> bool:
        """False when the node's workflow instance is over (stopped): no retry is made."""

    async def node_finished(self, instance: Instance, retry: Instance | None) -> None:
        """A node's instance ended (``retry`` is its retry, if one was made): advance the workflow."""


class Lifecycle:
    """Instance endings and the timeout watcher.

    ``engine`` is woken when a second_delay job is re-armed; ``alarms`` may be None (no alarms sent);
    ``on_created`` receives retry instances (for dispatch, which waits for their schedule time);
    ``stop_instance(instance, reason)`` kills an instance for timeoutKillEnable; ``history_keep`` is
    how many finished instances each job keeps (0 keeps all).
    """

    def __init__(
        self,
        store: Store,
        *,
        clock: Clock,
        default_tz: tzinfo,
        engine: TriggerEngine | None,
        alarms: AlarmRouter | None,
        on_created: OnCreated,
        history_keep: int = 300,
        stop_instance: StopInstance | None = None,
        timeout_check_interval: float = 1.0,
        timeout_scan_limit: int = 10000,
    ) -> None:
        if history_keep < 0:
            raise ValueError(f"history_keep={history_keep!r}: must not be negative")
        if timeout_check_interval <= 0:
            raise ValueError(f"timeout_check_interval={timeout_check_interval!r}: must be positive")
        self._store = store
        self._clock = clock
        self._default_tz = default_tz
        self._engine = engine
        self._alarms = alarms
        self._on_created = on_created
        self._history_keep = history_keep
        self._stop_instance = stop_instance
        self._interval = timedelta(seconds=timeout_check_interval)
        self._scan_limit = timeout_scan_limit
        self._killed: set[int] = set()
        self._since_prune: dict[int, int] = {}
        # Instances whose end is being handled now: a second caller (workflow recovery) waits its turn out.
        self._finishing: set[int] = set()
        self.workflows: WorkflowNodeHooks | None = None
        """Told about every finished workflow node instance (set by the scheduler's composition)."""
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    # -- instance endings ---------------------------------------------------------------------
    async def instance_finished(self, instance: Instance, *, system_failure: bool = False) -> Instance | None:
        """Handle a finished instance: retry it (maxAttempt), re-arm a second_delay job, send the fail
        alarm, prune history. ``system_failure`` marks a failure of the system (a lost worker, a store
        fault) rather than of the job: its retry has trigger type 5. Returns the retry, if one was made."""
        if not instance.status.finished:
            raise ValueError(f"instance {instance.id} status={int(instance.status)}: not finished")
        if instance.id in self._finishing:
            return None
        self._finishing.add(instance.id)
        try:
            return await self._finished(instance, system_failure=system_failure)
        finally:
            self._finishing.discard(instance.id)

    async def _finished(self, instance: Instance, *, system_failure: bool) -> Instance | None:
        self._killed.discard(instance.id)
        job = await self._store.get_job(instance.job_id)
        if job is None:
            if instance.wf_instance_id is not None and self.workflows is not None:
                await self.workflows.node_finished(instance, None)
            return None
        retry: Instance | None = None
        retry_allowed = True
        if instance.wf_instance_id is not None and self.workflows is not None:
            retry_allowed = await self.workflows.may_retry(instance)
        if instance.status == InstanceStatus.FAILED and retry_allowed:
            retry = await self._retry(job, instance, system_failure=system_failure)
            if retry is None and job.spec.monitor.fail_enable and self._alarms is not None:
                await self._alarms.alarm(
                    "failure",
                    job,
                    instance,
                    f"instance {instance.id} failed (attempt {instance.attempt}): {instance.result}",
                    now=self._clock.now(),
                    detail={"attempt": instance.attempt, "result": instance.result},
                )
        if retry is None and job.spec.schedule.time_type == TimeType.SECOND_DELAY:
            await self._rearm(job, instance)
        if self._history_keep > 0:
            await self._store.prune_instances(job.id, self._history_keep)
        if instance.wf_instance_id is not None and self.workflows is not None:
            # After the retry decision: a workflow node fails only once its retries are used up.
            await self.workflows.node_finished(instance, retry)
        return retry

    async def _retry(self, job: Job, failed: Instance, *, system_failure: bool) -> Instance | None:
        spec = job.spec
        if failed.attempt >= spec.max_attempt or is_killed(failed.result):
            return None
        if await self._store.find_retry(failed.id) is not None:
            return None
        trigger = TriggerType.SYSTEM_RETRY if system_failure else failed.trigger_type
        new = NewInstance(
            job_id=failed.job_id,
            namespace=failed.namespace,
            group_id=failed.group_id,
            status=InstanceStatus.WAITING,
            trigger_type=trigger,
            time_type=failed.time_type,
            schedule_time=self._clock.now() + timedelta(seconds=spec.attempt_interval),
            data_time=failed.data_time,
            attempt=failed.attempt + 1,
            instance_parameters=failed.instance_parameters,
            wf_instance_id=failed.wf_instance_id,
            retry_of=failed.id,
            upstream_data=failed.upstream_data,
        )
        try:
            retry = await self._store.create_instance(new)
        except DuplicateError:
            return None  # another replica made it first
        logger.info(
            "instance %d of job %d failed: retry %d/%d is instance %d at %s",
            failed.id,
            job.id,
            retry.attempt,
            spec.max_attempt,
            retry.id,
            retry.schedule_time.isoformat(),
        )
        await self._on_created([retry])
        return retry

    async def _rearm(self, job: Job, instance: Instance) -> None:
        if not job.enabled or job.next_fire_time is not None:
            return
        if await self._store.count_active_instances(job.id):
            return  # the last one to end re-arms
        end = instance.end_time or self._clock.now()
        try:
            delay = schedule_seconds(job.spec)
        except ValueError:
            logger.exception("job %d: bad second_delay expression; not re-armed", job.id)
            return
        await self._store.update_job(job.id, next_fire_time=end + timedelta(seconds=delay))
        if self._engine is not None:
            self._engine.wake()

    # -- timeouts -------------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def start(self) -> None:
        """Start the timeout watcher (idempotent)."""
        if self.running:
            return
        self._stopping.clear()
        self._task = asyncio.create_task(self._watch(), name="sx-timeout-watcher")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is None:
            return
        self._stopping.set()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def _watch(self) -> None:
        while not self._stopping.is_set():
            try:
                await self.check_timeouts()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("timeout check failed")
            await self._clock.sleep_until(self._clock.now() + self._interval, self._stopping)

    async def check_timeouts(self) -> int:
        """Alarm and kill running instances past their job's timeout; returns how many were past it."""
        now = self._clock.now()
        running = await self._store.instances_with_status([InstanceStatus.RUNNING], limit=self._scan_limit)
        jobs: dict[int, Job | None] = {}
        late = 0
        for instance in running:
            if instance.job_id not in jobs:
                jobs[instance.job_id] = await self._store.get_job(instance.job_id)
            job = jobs[instance.job_id]
            if job is None:
                continue
            monitor = job.spec.monitor
            if not (monitor.timeout_enable or monitor.timeout_kill_enable):
                continue
            started = instance.start_time or instance.created_at
            if now - started <= timedelta(seconds=monitor.timeout):
                continue
            late += 1
            await self._timed_out(job, instance, now, started)
        return late

    async def _timed_out(self, job: Job, instance: Instance, now: datetime, started: datetime) -> None:
        monitor = job.spec.monitor
        ran = int((now - started).total_seconds())
        reason = f"timeout: ran {ran}s, longer than its timeout of {monitor.timeout}s"
        if monitor.timeout_enable and not instance.timeout_alarmed:
            # The flag is set with a compare-and-set so replicas alarm once between them.
            marked = await self._store.update_instance(
                instance.id, InstanceChange(timeout_alarmed=True), only_if_status=[InstanceStatus.RUNNING]
            )
            if marked is not None and self._alarms is not None:
                await self._alarms.alarm(
                    "timeout", job, instance, reason, now=now, detail={"timeout": monitor.timeout, "ran": ran}
                )
        if (
            monitor.timeout_kill_enable
            and self._stop_instance is not None
            and instance.id not in self._killed
        ):
            self._killed.add(instance.id)
            logger.warning("killing instance %d of job %d: %s", instance.id, job.id, reason)
            try:
                await self._stop_instance(instance, reason)
            except Exception:
                self._killed.discard(instance.id)  # try again on the next check
                logger.exception("could not kill instance %d", instance.id)
