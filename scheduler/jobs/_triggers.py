"""The trigger engine: turns due jobs into instances, at their time, exactly once across replicas.

The loop sleeps until the earliest persisted next fire time (one index look-up), takes the jobs due
then in batches, computes each one's following fire from its due time (not from now, so fires never
drift), and claims them all in one store call. The claim is a compare-and-set on the job's next fire
time, so several scheduler replicas sharing a store never fire a job twice. Work per second grows with
the number of due jobs, not with the number of jobs stored.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, tzinfo
from typing import Protocol

from sx.processors import InstanceStatus, MisfirePolicy, TimeType, TriggerType
from sx.scheduler._clock import Clock
from sx.scheduler._loops import Loop
from sx.scheduler.jobs._hooks import OnCreated
from sx.scheduler.jobs._timing import data_time, latest_missed_fire, next_fire_time
from sx.scheduler.store import Calendar, CalendarStore, Fire, InstanceStore, Job, JobStore, NewInstance

__all__ = ["TriggerEngine", "TriggerStore", "rejected_result"]


class TriggerStore(JobStore, InstanceStore, CalendarStore, Protocol):
    """What the trigger engine reads and writes: due jobs and their fire claims, active instances and
    calendars."""


logger = logging.getLogger("sx.scheduler.triggers")


def rejected_result(max_concurrency: int) -> str:
    """The result of an instance refused because the job already runs ``max_concurrency`` instances."""
    return f"rejected: maxConcurrency {max_concurrency} reached"


@dataclass(frozen=True, slots=True)
class _Plan:
    fire: Fire
    wants_instance: bool


class TriggerEngine:
    """Fires cron, fixed_rate and second_delay jobs when they are due.

    ``on_created`` receives the WAITING instances each batch created (for dispatch). ``misfire_grace``
    is how late a fire may be and still count as on time; beyond it the fire was missed (the scheduler
    was down) and the job's misfire policy applies. ``idle_poll`` bounds each sleep so jobs changed by
    another replica are noticed even without ``wake()``. Fires due within ``prefetch`` seconds are
    loaded and planned ahead (up to ``prefetch_batches`` batches), so they are claimed as soon as
    they are due; each claim is one store call of at most ``batch_size`` fires.

    For ``recovery`` seconds after start, while workers come back to a restarted scheduler, a fire
    that finds its job's maxConcurrency taken follows the job's misfire policy (it does not run, with a
    warning) instead of ending REJECTED: the instances in the way are there because of the downtime.
    The same holds while ``group_recovering(namespace, group_id)`` says the job's group is between
    scheduler replicas (its owner died or restarted).
    """

    def __init__(
        self,
        store: TriggerStore,
        *,
        clock: Clock,
        default_tz: tzinfo,
        on_created: OnCreated,
        batch_size: int = 2000,
        misfire_grace: float = 5.0,
        idle_poll: float = 2.0,
        prefetch: float = 0.5,
        prefetch_batches: int = 10,
        error_backoff: float = 1.0,
        recovery: float = 0.0,
        on_misfire: Callable[[MisfirePolicy], None] | None = None,
        group_recovering: Callable[[str, str], bool] | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size!r}: must be at least 1")
        if misfire_grace < 0:
            raise ValueError(f"misfire_grace={misfire_grace!r}: must not be negative")
        if idle_poll <= 0:
            raise ValueError(f"idle_poll={idle_poll!r}: must be positive")
        self._store = store
        self._clock = clock
        self._default_tz = default_tz
        self._on_created = on_created
        self._on_misfire = on_misfire
        self._batch_size = batch_size
        self._grace = timedelta(seconds=misfire_grace)
        self._idle_poll = timedelta(seconds=idle_poll)
        self._prefetch = timedelta(seconds=max(0.0, prefetch))
        self._prefetch_batches = max(1, prefetch_batches)
        self._recovery = timedelta(seconds=max(0.0, recovery))
        self._recovering_until = clock.now()
        self._group_recovering = group_recovering
        self._loop = Loop(
            "sx-trigger-engine",
            self._cycle,
            clock=clock,
            logger=logger,
            failure="trigger cycle failed; retrying",
            error_backoff=timedelta(seconds=error_backoff),
        )
        self._wake = self._loop.wakeup
        self.fired = 0
        """Instances created so far (WAITING and REJECTED), for metrics and tests."""
        self.caught_up_to: datetime | None = None
        """The last clock time at which nothing was left due (the engine had fired everything)."""

    @property
    def running(self) -> bool:
        return self._loop.running

    async def start(self) -> None:
        """Start the loop (idempotent)."""
        if not self._loop.running:
            self._recovering_until = self._clock.now() + self._recovery
        self._loop.start()

    async def stop(self) -> None:
        """Stop the loop and wait for it; a batch being claimed is cancelled (the claim is atomic)."""
        await self._loop.stop()

    def wake(self) -> None:
        """A job changed: recompute the earliest due time now."""
        self._loop.wake()

    async def _cycle(self) -> None:
        now = self._clock.now()
        due = await self._store.next_due_time()
        if due is not None and due > now and due - now <= self._prefetch:
            await self._fire_prepared(due)
            return
        if due is None or due > now:
            self.caught_up_to = now
            limit = now + self._idle_poll
            if due is not None:
                limit = min(limit, due - self._prefetch)
            await self._clock.sleep_until(limit, self._wake)
            return
        await self._fire_backlog()

    async def _fire_backlog(self) -> None:
        # Everything due now, batch after batch; a full batch means more may be waiting.
        while await self.fire_due(self._clock.now()) >= self._batch_size:
            pass

    async def _fire_prepared(self, due: datetime) -> None:
        # Load and plan the fires at ``due`` before it comes (several batches' worth), so at ``due`` only
        # the concurrency counts and the claims remain. The claim's compare-and-set on the due time
        # discards any plan a job change made stale; a local change also wakes us and drops the plan.
        self.caught_up_to = self._clock.now()
        limit = self._batch_size * self._prefetch_batches
        jobs = await self._store.due_jobs(due, limit)
        calendars = await self._calendars(jobs)
        plans = [self._plan(job, due, calendars) for job in jobs]
        await self._clock.sleep_until(due, self._wake)
        if self._wake.is_set() or self._clock.now() < due:
            return
        for start in range(0, len(jobs), self._batch_size):
            end = start + self._batch_size
            await self._claim(jobs[start:end], plans[start:end])
        if len(jobs) >= limit:
            await self._fire_backlog()

    async def fire_due(self, now: datetime) -> int:
        """Fire one batch of the jobs due at ``now``; returns how many due jobs were taken."""
        jobs = await self._store.due_jobs(now, self._batch_size)
        if not jobs:
            return 0
        calendars = await self._calendars(jobs)
        await self._claim(jobs, [self._plan(job, now, calendars) for job in jobs])
        return len(jobs)

    async def _claim(self, jobs: Sequence[Job], plans: list[_Plan]) -> None:
        await self._apply_concurrency(jobs, plans)
        created = await self._store.claim_fires([p.fire for p in plans])
        made = [inst for inst in created if inst is not None]
        self.fired += len(made)
        waiting = [inst for inst in made if inst.status == InstanceStatus.WAITING]
        if waiting:
            try:
                await self._on_created(waiting)
            except Exception:
                # The instances exist (WAITING) in the store; dispatch recovery picks them up from there.
                logger.exception("on_created failed for %d new instances", len(waiting))

    async def _calendars(self, jobs: Sequence[Job]) -> dict[tuple[str, str], Calendar | None]:
        found: dict[tuple[str, str], Calendar | None] = {}
        for job in jobs:
            if job.spec.calendar and job.spec.schedule.time_type == TimeType.CRON:
                key = (job.namespace, job.spec.calendar)
                if key not in found:
                    found[key] = await self._store.get_calendar(*key)
                    if found[key] is None:
                        logger.warning("job %d names calendar %r, which does not exist", job.id, key[1])
        return found

    def _plan(self, job: Job, now: datetime, calendars: dict[tuple[str, str], Calendar | None]) -> _Plan:
        due = job.next_fire_time
        assert due is not None  # due_jobs only returns jobs with a next fire time
        spec = job.spec
        time_type = spec.schedule.time_type
        calendar: Calendar | None = None
        if spec.calendar and time_type == TimeType.CRON:
            # A job bound to a missing calendar fires on no day rather than on every day.
            calendar = calendars.get((job.namespace, spec.calendar)) or Calendar(
                namespace=job.namespace, name=spec.calendar, days=frozenset()
            )
        if time_type == TimeType.API:
            return _Plan(Fire(job.id, due, None, None), wants_instance=False)
        schedule_time = due
        wants_instance = True
        try:
            if time_type == TimeType.SECOND_DELAY:
                # The next one is armed when this instance ends (see Lifecycle).
                following = None
            elif now - due > self._grace:
                schedule_time, following, wants_instance = self._misfire(job, due, now, calendar)
            else:
                following = next_fire_time(spec, due, default_tz=self._default_tz, calendar=calendar)
                if following is not None and following <= now:
                    # Later fires are due too (the scheduler fell behind by more than one period).
                    schedule_time, following, wants_instance = self._misfire(job, due, now, calendar)
        except Exception:
            # A job whose schedule cannot be evaluated must not stall the others: park it.
            logger.exception("job %d: cannot compute its next fire time; it will not fire again", job.id)
            return _Plan(Fire(job.id, due, None, None), wants_instance=False)
        instance = None
        if wants_instance:
            instance = NewInstance(
                job_id=job.id,
                namespace=job.namespace,
                group_id=job.group_id,
                status=InstanceStatus.WAITING,
                trigger_type=TriggerType.SCHEDULED,
                time_type=time_type,
                schedule_time=schedule_time,
                data_time=data_time(spec, schedule_time),
            )
        return _Plan(Fire(job.id, due, following, instance), wants_instance=wants_instance)

    def _misfire(
        self, job: Job, due: datetime, now: datetime, calendar: Calendar | None
    ) -> tuple[datetime, datetime | None, bool]:
        """Fires of ``job`` from ``due`` on were missed (the scheduler was down or behind): one decision
        for all of them rather than a burst. Returns the schedule time to run, the next fire time, and
        whether to run at all. The latest missed fire runs when it is within the grace (it is on time);
        the older ones are skipped, or with misfirePolicy run_once stand for that one run, which runs
        even when the latest fire was beyond the grace too."""
        spec = job.spec
        latest, following = latest_missed_fire(spec, due, now, default_tz=self._default_tz, calendar=calendar)
        on_time = now - latest <= self._grace
        since = due.isoformat()
        if self._on_misfire is not None:
            self._on_misfire(MisfirePolicy(spec.misfire))
        if spec.misfire == MisfirePolicy.SKIP and not on_time:
            # Work that will not happen: say so where operators look, never silently.
            logger.warning("job %d missed its fires since %s: skipped (misfirePolicy skip)", job.id, since)
            return latest, following, False
        if spec.misfire == MisfirePolicy.SKIP:
            logger.warning(
                "job %d missed its fires since %s: skipped (misfirePolicy skip) but the one at %s (on time)",
                job.id,
                since,
                latest.isoformat(),
            )
        else:
            logger.warning(
                "job %d missed its fires since %s: running once for %s (misfirePolicy run_once)",
                job.id,
                since,
                latest.isoformat(),
            )
        return latest, following, True

    async def _apply_concurrency(self, jobs: Sequence[Job], plans: list[_Plan]) -> None:
        wanted = [
            (i, job) for i, (job, plan) in enumerate(zip(jobs, plans, strict=True)) if plan.wants_instance
        ]
        if not wanted:
            return
        active = await self._store.count_active_instances_by_job([job.id for _, job in wanted])
        recovering = self._clock.now() < self._recovering_until
        group_recovering = self._group_recovering
        for i, job in wanted:
            limit = job.spec.max_concurrency
            if active.get(job.id, 0) < limit:
                continue
            fire = plans[i].fire
            assert fire.instance is not None
            if recovering or (group_recovering is not None and group_recovering(job.namespace, job.group_id)):
                # Instances from before the restart hold the limit until their workers are back (or
                # are found lost): the downtime was ours, so the fire follows the misfire policy.
                plans[i] = _Plan(Fire(fire.job_id, fire.due, fire.next_fire_time, None), wants_instance=False)
                logger.warning(
                    "job %d: fire at %s not run (misfirePolicy %s): its instances from before a "
                    "scheduler restart or a change of replica hold maxConcurrency %d while workers come back",
                    job.id,
                    fire.instance.schedule_time.isoformat(),
                    MisfirePolicy(job.spec.misfire).value,
                    limit,
                )
                continue
            rejected = replace(fire.instance, status=InstanceStatus.REJECTED, result=rejected_result(limit))
            plans[i] = _Plan(Fire(fire.job_id, fire.due, fire.next_fire_time, rejected), wants_instance=True)
