"""Integration-test a processor against a real scheduler and worker, in this process, on 127.0.0.1.

    from sx.worker.testing import LocalScheduler

    async def test_hello(tmp_path):
        async with LocalScheduler(tmp_path) as sched:
            outcome = await sched.run_job(Hello, instance_parameters="Ada")
            assert outcome.ok and outcome.result == "hello, Ada"

``LocalScheduler`` starts a whole scheduler (SQLite in the given folder, OpenAPI and gRPC on free ports)
and one ``Worker`` serving a registry, both on the running event loop and talking over the real
protocols. Nothing is mocked: what passes here passes against ``sx-worker serve``. For a single hook
call with no network at all, use ``sx.processors.testing.run_processor``.

With ``manual_clock=True`` the scheduler's time (triggers, retry intervals, timeouts, second_delay
waits) stands still until the test moves it, so a daily cron job or a one-hour retry interval is
tested in milliseconds::

    async with LocalScheduler(tmp_path, manual_clock=True) as sched:
        await sched.job_id(Nightly)               # register the cron job; its next fire is computed
        await sched.advance(24 * 3600)            # a day passes for the scheduler
        (run,) = await sched.wait_instances(Nightly, 1)

The worker keeps real time: a hook that sleeps still sleeps.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

from sx.processors import (
    InstanceStatus,
    Processor,
    ProcessorDefinition,
    Registry,
    SxError,
    default_registry,
    definition_of,
)
from sx.scheduler import Clock, ManualClock, RealClock, SchedulerServer, SchedulerSettings
from sx.worker._settings import WorkerSettings
from sx.worker._worker import Worker
from sx.worker.openapi import InstanceDetail, OpenApiClient, SyncOptions, sync_definitions

__all__ = ["InstanceFailedError", "InstanceResult", "LocalScheduler"]

_POLL = 0.02
# With a manual clock, worker silence is measured on it, so one jump of this much drops a live worker.
# It travels to the worker in milliseconds in an int32: 20 days is about the most that fits.
_MANUAL_HEARTBEAT_TIMEOUT = 20 * 24 * 3600.0
_ACTIVE = (InstanceStatus.WAITING, InstanceStatus.READY, InstanceStatus.RUNNING)

Target = type[Processor] | str


class InstanceFailedError(SxError):
    """An instance ended FAILED (or REJECTED) where the test expected success."""

    def __init__(self, outcome: InstanceResult) -> None:
        self.outcome = outcome
        super().__init__(
            f"instance {outcome.instance_id} of job {outcome.job_id} ended {outcome.status.name}: "
            f"{outcome.result or '(no result)'}"
        )


@dataclass(frozen=True, slots=True)
class InstanceResult:
    """A finished instance as the scheduler stores it."""

    job_id: int
    instance_id: int
    status: InstanceStatus
    result: str
    progress: str
    detail: InstanceDetail

    @property
    def ok(self) -> bool:
        """True when the instance ended SUCCESS."""
        return self.status is InstanceStatus.SUCCESS

    def raise_for_status(self) -> InstanceResult:
        """Return self when it succeeded; raise ``InstanceFailedError`` otherwise."""
        if not self.ok:
            raise InstanceFailedError(self)
        return self

    @classmethod
    def from_detail(cls, detail: InstanceDetail) -> InstanceResult:
        return cls(
            job_id=detail.job_id,
            instance_id=detail.instance_id,
            status=detail.status,
            result=detail.result,
            progress=detail.progress,
            detail=detail,
        )


class LocalScheduler:
    """An in-process scheduler plus one worker, for tests: ``async with LocalScheduler(tmp_path) as s:``.

    ``registry`` is what the worker serves (default: the default registry). ``namespace`` and
    ``group_id`` name the group the jobs live in (created on start). ``concurrency`` and
    ``shutdown_grace`` go to the worker; ``heartbeat_interval`` and ``heartbeat_timeout`` to the
    scheduler. ``start_worker=False`` starts the scheduler alone (start workers of your own with
    ``worker_settings()``).

    ``scheduler_options`` are more ``SchedulerSettings`` fields (``alarm_apprise_url``, ...).

    ``manual_clock=True`` gives the scheduler a ``ManualClock`` (starting at ``start_time``, default
    now, whole seconds) that only ``advance`` and ``set_time`` move; ``clock`` is the clock either way.
    The scheduler measures worker silence on that clock too, so ``heartbeat_timeout`` then defaults to
    20 days: a jump shorter than that does not make the live worker look lost (make longer moves in
    several jumps, waiting for an effect in between). One jump runs each scheduled job at most
    once, like a scheduler that was down (its misfire policy: ``run_once`` runs the latest fire passed,
    ``skip`` runs it only when the jump ends within 5 s of it): advance one period at a time to see each
    run.
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        registry: Registry | None = None,
        namespace: str = "default",
        group_id: str = "default",
        concurrency: int = 16,
        shutdown_grace: float = 5.0,
        heartbeat_interval: float = 1.0,
        heartbeat_timeout: float | None = None,
        start_worker: bool = True,
        manual_clock: bool = False,
        start_time: datetime | None = None,
        scheduler_options: Mapping[str, Any] | None = None,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.registry = registry if registry is not None else default_registry()
        self.namespace = namespace
        self.group_id = group_id
        self.concurrency = concurrency
        self.shutdown_grace = shutdown_grace
        self.start_worker = start_worker
        if start_time is not None and not manual_clock:
            raise ValueError("start_time: only a manual clock can start at a chosen time (manual_clock=True)")
        if start_time is not None and (start_time.tzinfo is None or start_time.utcoffset() is None):
            raise ValueError(f"start_time={start_time!r}: must be timezone-aware")
        self.clock: Clock = (
            ManualClock((start_time or datetime.now(UTC).replace(microsecond=0)).astimezone(UTC))
            if manual_clock
            else RealClock()
        )
        options: dict[str, Any] = {
            "data_dir": self.data_dir / "scheduler",
            "database_url": None,
            "http_host": "127.0.0.1",
            "http_port": 0,
            "grpc_host": "127.0.0.1",
            "grpc_port": 0,
            "heartbeat_interval": heartbeat_interval,
            "heartbeat_timeout": heartbeat_timeout or (_MANUAL_HEARTBEAT_TIMEOUT if manual_clock else 5.0),
        }
        options.update(scheduler_options or {})
        self.scheduler_settings = SchedulerSettings(**options)
        self.server: SchedulerServer | None = None
        self.worker: Worker | None = None
        self._client: OpenApiClient | None = None
        self._app_key = ""
        self._job_ids: dict[str, int] = {}
        self._started: dict[int, int] = {}  # instance id -> job id, of instances this kit triggered

    # -- lifecycle ---------------------------------------------------------------------------------

    @property
    def client(self) -> OpenApiClient:
        """An OpenAPI client of the scheduler, addressing this kit's namespace and group."""
        if self._client is None:
            raise RuntimeError("LocalScheduler is not started: use `async with LocalScheduler(...)`")
        return self._client

    @property
    def app_key(self) -> str:
        """The group's app key (what a worker of the group presents)."""
        return self._app_key

    def worker_settings(self, **overrides: object) -> WorkerSettings:
        """Settings for a worker of this kit's group, connected to this scheduler."""
        server = self._require_server()
        options: dict[str, object] = {
            "server": server.grpc_address,
            "namespace": self.namespace,
            "group_id": self.group_id,
            "app_key": self._app_key,
            "concurrency": self.concurrency,
            "shutdown_grace": self.shutdown_grace,
            "data_dir": self.data_dir / "worker",
        }
        options.update(overrides)
        return WorkerSettings(**options)  # type: ignore[arg-type]

    async def start(self, *, timeout: float = 30.0) -> None:
        """Start the scheduler, create the group and (unless ``start_worker=False``) start the worker
        and wait until it registered."""
        server = SchedulerServer(self.scheduler_settings, clock=self.clock)
        await server.start()
        self.server = server
        try:
            self._client = OpenApiClient(server.http_url, namespace=self.namespace, group_id=self.group_id)
            group = await self._client.ensure_group()
            self._app_key = group.app_key
            if self.start_worker:
                worker = Worker(self.worker_settings(), registry=self.registry)
                await worker.__aenter__()
                self.worker = worker
                await asyncio.wait_for(worker.connected.wait(), timeout)
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        """Shut the worker down gracefully, then stop the scheduler. Idempotent."""
        worker, self.worker = self.worker, None
        if worker is not None:
            await worker.__aexit__(None, None, None)
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()
        server, self.server = self.server, None
        if server is not None:
            await server.stop()

    async def __aenter__(self) -> LocalScheduler:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    def _require_server(self) -> SchedulerServer:
        if self.server is None:
            raise RuntimeError("LocalScheduler is not started: use `async with LocalScheduler(...)`")
        return self.server

    # -- time ------------------------------------------------------------------------------------------

    @property
    def manual_clock(self) -> ManualClock:
        """The scheduler's ManualClock; a ``RuntimeError`` when the kit runs on real time."""
        if not isinstance(self.clock, ManualClock):
            raise RuntimeError("this LocalScheduler runs on real time: pass manual_clock=True to move time")
        return self.clock

    def now(self) -> datetime:
        """The scheduler's current time (UTC)."""
        return self.clock.now()

    async def advance(self, seconds: float) -> None:
        """Move the manual clock forward by ``seconds``; what fell due runs (wait for its effect)."""
        if seconds < 0:
            raise ValueError(f"seconds={seconds!r}: the clock only moves forward")
        await self.manual_clock.advance(seconds)

    async def set_time(self, when: datetime) -> None:
        """Move the manual clock to ``when`` (timezone-aware, not before the clock's current time)."""
        clock = self.manual_clock
        if when.tzinfo is None or when.utcoffset() is None:
            raise ValueError(f"when={when!r}: must be timezone-aware")
        if when < clock.now():
            raise ValueError(f"when={when.isoformat()}: before the clock's {clock.now().isoformat()}")
        await clock.set(when.astimezone(UTC))

    # -- jobs --------------------------------------------------------------------------------------

    def definition(self, target: Target) -> ProcessorDefinition:
        """The definition of a decorated class, or of a name registered in this kit's registry."""
        if isinstance(target, str):
            return self.registry.get(target)
        return definition_of(target)

    async def job_id(self, target: Target) -> int:
        """The id of the job of ``target``, syncing its definition (create or update) the first time."""
        definition = self.definition(target)
        known = self._job_ids.get(definition.name)
        if known is not None:
            return known
        outcome = await sync_definitions(self.client, [definition], SyncOptions())
        if not outcome.ok:
            raise SxError(f"job sync of {definition.name!r} failed: {outcome.summary()}")
        job = await self.client.find_job(definition.name)
        if job is None:
            raise SxError(f"job {definition.name!r} was synced but the scheduler does not list it")
        self._job_ids[definition.name] = job.job_id
        return job.job_id

    async def start_job(self, target: Target, instance_parameters: str = "") -> int:
        """ExecuteJob (syncing the job first if needed); returns the new instance's id at once."""
        job_id = await self.job_id(target)
        instance_id = await self.client.execute_job(job_id, instance_parameters)
        self._started[instance_id] = job_id
        return instance_id

    async def run_job(
        self, target: Target, instance_parameters: str = "", *, timeout: float = 30.0
    ) -> InstanceResult:
        """ExecuteJob and wait for the instance's final status (SUCCESS, FAILED or REJECTED).

        Raises ``TimeoutError`` when it is still running after ``timeout`` seconds. A failed instance
        is returned, not raised: call ``raise_for_status()`` on the result to raise it.
        """
        instance_id = await self.start_job(target, instance_parameters)
        return await self.wait_instance(self._started[instance_id], instance_id, timeout=timeout)

    async def stop_instance(self, instance_id: int) -> None:
        """StopInstance (kill) an instance this kit started."""
        job_id = self._started.get(instance_id)
        if job_id is None:
            raise KeyError(f"instance_id={instance_id!r}: not started through this LocalScheduler")
        await self.client.stop_instance(job_id, instance_id)

    async def wait_instance(self, job_id: int, instance_id: int, *, timeout: float = 30.0) -> InstanceResult:
        """Poll the instance until it finished; ``TimeoutError`` after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            detail = await self.client.get_instance(job_id, instance_id)
            if detail.status.finished:
                return InstanceResult.from_detail(detail)
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"instance {instance_id} of job {job_id} is still {detail.status.name} after {timeout:g}s"
                )
            await asyncio.sleep(_POLL)

    async def join(self, *, timeout: float = 30.0, fail_fast: bool = True) -> list[InstanceResult]:
        """Wait until every instance this kit started has finished; their results, in start order.

        With ``fail_fast`` the first failed instance seen raises ``InstanceFailedError`` at once
        (others may still be running); without it, failures are returned like successes. Each instance
        is waited for once: a later ``join`` only waits for instances started since.
        """
        deadline = time.monotonic() + timeout
        pending = dict(self._started)
        finished: dict[int, InstanceResult] = {}
        try:
            while pending:
                for instance_id, job_id in list(pending.items()):
                    detail = await self.client.get_instance(job_id, instance_id)
                    if not detail.status.finished:
                        continue
                    outcome = InstanceResult.from_detail(detail)
                    finished[instance_id] = outcome
                    del pending[instance_id]
                    if fail_fast and not outcome.ok:
                        raise InstanceFailedError(outcome)
                if not pending:
                    break
                if time.monotonic() > deadline:
                    names = ", ".join(str(i) for i in pending)
                    raise TimeoutError(f"instance(s) {names} still running after {timeout:g}s")
                await asyncio.sleep(_POLL)
        finally:
            for instance_id in finished:
                self._started.pop(instance_id, None)
        return [finished[i] for i in sorted(finished)]

    async def instances(self, target: Target, *, limit: int = 100) -> list[InstanceResult]:
        """The job's most recent instances (any status, newest first), up to ``limit``."""
        job_id = await self.job_id(target)
        page = await self.client.list_instances(job_id, page_size=min(limit, 100))
        return [InstanceResult.from_detail(detail) for detail in page.instances]

    async def active_instances(self, target: Target) -> list[InstanceResult]:
        """The job's instances that are waiting or running."""
        job_id = await self.job_id(target)
        page = await self.client.list_instances(job_id, statuses=_ACTIVE, page_size=100)
        return [InstanceResult.from_detail(detail) for detail in page.instances]

    async def wait_instances(
        self, target: Target, count: int, *, timeout: float = 30.0
    ) -> list[InstanceResult]:
        """Wait until the job has at least ``count`` finished instances; the newest ``count``, oldest first.

        For scheduled runs (cron, fixed_rate, second_delay, retries) that the test did not start itself:
        move the manual clock, then wait here for the runs it caused.
        """
        if count < 1 or count > 100:
            raise ValueError(f"count={count!r}: must be 1 to 100")
        job_id = await self.job_id(target)
        deadline = time.monotonic() + timeout
        while True:
            page = await self.client.list_instances(job_id, page_size=100)
            done = [InstanceResult.from_detail(d) for d in page.instances if d.status.finished]
            if len(done) >= count:
                return sorted(done, key=lambda r: r.instance_id)[-count:]
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"job {job_id} has {len(done)} finished instance(s) after {timeout:g}s, not {count}"
                )
            await asyncio.sleep(_POLL)
