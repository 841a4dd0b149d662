"""What happens around an instance's end: retries, second_delay re-arming, alarms, history, timeouts.

The lifecycle listens to ``InstanceEvents.finished``: whoever finishes an instance (dispatch on a
worker's report, the API on a kill) announces it once the store holds its final status. When it has
handled the end it announces ``InstanceEvents.ended`` with the retry it made, if any (the workflow
engine advances the instance's workflow then). A watcher loop finds running instances past their
job's timeout, alarms once, and kills them when the job asks for it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta, tzinfo
from typing import Protocol

from sx.processors import InstanceStatus, TimeType, TriggerType
from sx.processors.engine import is_killed
from sx.scheduler._clock import Clock
from sx.scheduler._loops import Loop
from sx.scheduler.jobs._alarms import AlarmRouter
from sx.scheduler.jobs._events import InstanceEvents
from sx.scheduler.jobs._hooks import OnCreated, StopInstance
from sx.scheduler.jobs._timing import schedule_seconds
from sx.scheduler.store import (
    DuplicateError,
    Instance,
    InstanceChange,
    InstanceStore,
    Job,
    JobStore,
    NewInstance,
)

__all__ = ["Lifecycle", "LifecycleStore", "Wakes"]


class LifecycleStore(JobStore, InstanceStore, Protocol):
    """What the lifecycle reads and writes: instances (retries, timeouts, history) and their jobs."""


logger = logging.getLogger("sx.scheduler.lifecycle")


class Wakes(Protocol):
    """A loop to wake when the times it waits for changed (the trigger engine)."""

    def wake(self) -> None: ...


class Lifecycle:
    """Instance endings and the timeout watcher.

    ``engine`` is woken when a second_delay job is re-armed; ``alarms`` may be None (no alarms sent);
    ``on_created`` receives retry instances (for dispatch, which waits for their schedule time);
    ``stop_instance(instance, reason)`` kills an instance for timeoutKillEnable; ``history_keep`` is
    how many finished instances each job keeps (0 keeps all); ``watches_group(namespace, group_id)``
    says which groups' timeouts this scheduler watches (all by default). The lifecycle subscribes to
    ``events`` (its own, with no other listener, when none is given): see the module docstring.
    """

    def __init__(
        self,
        store: LifecycleStore,
        *,
        clock: Clock,
        default_tz: tzinfo,
        engine: Wakes | None,
        alarms: AlarmRouter | None,
        on_created: OnCreated,
        history_keep: int = 300,
        stop_instance: StopInstance | None = None,
        events: InstanceEvents | None = None,
        timeout_check_interval: float = 1.0,
        timeout_scan_limit: int = 10000,
        watches_group: Callable[[str, str], bool] | None = None,
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
        # With scheduler replicas, each watches the timeouts of the groups it dispatches (one alarm).
        self._watches_group = watches_group
        self._killed: set[int] = set()
        # Per job, the instances that ended since its history was last pruned (see _finished).
        self._ended_since_prune: dict[int, int] = {}
        # Instances whose end is being handled now: a second caller (workflow recovery) waits its turn out.
        self._finishing: set[int] = set()
        self._events = events if events is not None else InstanceEvents()
        self._events.on_finished(self._on_finished)
        self._watcher = Loop(
            "sx-timeout-watcher",
            self._watch_once,
            clock=clock,
            logger=logger,
            failure="timeout check failed",
            error_backoff=self._interval,
        )

    # -- instance endings ---------------------------------------------------------------------
    async def _on_finished(self, instance: Instance, system_failure: bool) -> None:
        await self.instance_finished(instance, system_failure=system_failure)

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
            await self._events.ended(instance, None)
            return None
        retry: Instance | None = None
        retry_allowed = await self._events.may_retry(instance)
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
            # Pruned every few endings rather than at each: the history may exceed the bound by a
            # sixteenth of it in between, and the prune's write is shared by that many instances.
            ended = self._ended_since_prune.get(job.id, 0) + 1
            if ended >= max(1, self._history_keep // 16):
                self._ended_since_prune.pop(job.id, None)
                await self._store.prune_instances(job.id, self._history_keep)
            else:
                self._ended_since_prune[job.id] = ended
        # After the retry decision: a workflow node fails only once its retries are used up.
        await self._events.ended(instance, retry)
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
        if not await self._store.active_instances_below(job.id, 1):
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
        return self._watcher.running

    async def start(self) -> None:
        """Start the timeout watcher (idempotent)."""
        self._watcher.start()

    async def stop(self) -> None:
        await self._watcher.stop()

    async def _watch_once(self) -> None:
        await self.check_timeouts()
        await self._clock.sleep_until(self._clock.now() + self._interval, self._watcher.wakeup)

    async def check_timeouts(self) -> int:
        """Alarm and kill running instances past their job's timeout; returns how many were past it."""
        now = self._clock.now()
        running = await self._store.instances_with_status([InstanceStatus.RUNNING], limit=self._scan_limit)
        jobs: dict[int, Job | None] = {}
        late = 0
        watches = self._watches_group
        for instance in running:
            if watches is not None and not watches(instance.namespace, instance.group_id):
                continue
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
