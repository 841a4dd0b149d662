"""A real cluster for end-to-end tests: ``sx-worker serve`` and ``sx-worker run`` processes on 127.0.0.1.

``Cluster`` starts the scheduler as a subprocess (so a test can SIGTERM and restart it on the same
data folder and ports) and worker subprocesses serving ``tests.e2e.jobs``. Each process writes its
output to a log file under the cluster's folder; a failing test prints their tails.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest

from sx.processors import InstanceStatus, JobSpec, ProcessorDefinition, Registry, use_registry
from sx.worker.openapi import InstanceDetail, OpenApiClient, SyncOpenApiClient

# The test process needs the job definitions, but must not add them to the default registry other
# tests (and `sx-worker list` run in-process) look at.
E2E_REGISTRY = Registry()
with use_registry(E2E_REGISTRY):
    from tests.e2e import jobs  # noqa: F401

ROOT = Path(__file__).resolve().parents[2]
NAMESPACE = "e2e"
GROUP = "workers"
START_TIMEOUT = 60.0
"""Seconds a process gets to start (a loaded 2-core machine can take several)."""
DEADLINE = 60.0
"""Default seconds a wait helper polls before it fails: generous, since a wait only ends early when
its condition holds (the per-test timeout is 120 s)."""
T = TypeVar("T")


def sx_worker() -> str:
    """The console script installed beside this interpreter."""
    beside = Path(sys.executable).parent / "sx-worker"
    found = str(beside) if beside.exists() else shutil.which("sx-worker")
    if found is None:
        raise RuntimeError("the sx-worker console script is not installed")
    return found


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without SX_* settings, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SX_")}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def wait_for(check: Callable[[], T | None], *, within: float, what: str) -> T:
    """Poll ``check`` until it returns something truthy; fail naming ``what`` after ``within`` s."""
    deadline = time.monotonic() + within
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached within {within:g}s: {what}")
        time.sleep(0.02)


async def eventually(check: Callable[[], Awaitable[T | None]], *, within: float = DEADLINE, what: str) -> T:
    """``wait_for`` for async checks."""
    deadline = time.monotonic() + within
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached within {within:g}s: {what}")
        await asyncio.sleep(0.02)


@dataclass(eq=False)
class Proc:
    """One subprocess and its log file."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def output(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace") if self.log.exists() else ""

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.output().splitlines()[-lines:])

    def alive(self) -> bool:
        return self.popen.poll() is None

    def signal(self, signum: signal.Signals) -> None:
        if self.alive():
            self.popen.send_signal(signum)

    def wait(self, timeout: float) -> int:
        return self.popen.wait(timeout=timeout)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after a few seconds."""
        if not self.alive():
            return
        self.popen.send_signal(signal.SIGTERM)
        try:
            self.popen.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(timeout=5)


def spawn(name: str, args: list[str], *, folder: Path, env: dict[str, str]) -> Proc:
    log = folder / f"{name}.log"
    with log.open("ab") as sink:
        popen = subprocess.Popen(
            args, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=sink, stderr=subprocess.STDOUT
        )
    return Proc(name, popen, log)


_SERVE_LINE = re.compile(r"scheduler: OpenAPI (http://\S+) .*gRPC (\S+)")


@dataclass(eq=False)
class Cluster:
    """A scheduler subprocess and worker subprocesses of one group, all on 127.0.0.1.

    The scheduler uses a 1 s heartbeat and a 3 s heartbeat timeout, so a lost worker is noticed fast.
    """

    folder: Path
    heartbeat_timeout: float = 3.0
    targets: tuple[str, ...] = ("tests.e2e.jobs",)
    """What the workers import (``sx-worker run TARGETS``)."""
    scheduler: Proc | None = None
    workers: list[Proc] = field(default_factory=list)
    http_url: str = ""
    grpc_address: str = ""
    app_key: str = ""
    job_ids: dict[str, int] = field(default_factory=dict)
    _serial: int = 0

    @property
    def events(self) -> Path:
        return self.folder / "events"

    # -- scheduler ---------------------------------------------------------------------------------

    def start_scheduler(
        self, *, heartbeat_timeout: float | None = None, env: dict[str, str] | None = None
    ) -> None:
        """Start ``sx-worker serve`` (on the ports of the previous run, if there was one), with ``env``
        added to its environment."""
        args = [sx_worker(), "serve", "--data-dir", str(self.folder / "scheduler")]
        if self.http_url:
            args += [
                "--http-port",
                self.http_url.rsplit(":", 1)[1],
                "--grpc-port",
                self.grpc_address.rsplit(":", 1)[1],
            ]
        else:
            args += ["--http-port", "0", "--grpc-port", "0"]
        scheduler_env = clean_env(
            SX_HEARTBEAT_INTERVAL="1",
            SX_HEARTBEAT_TIMEOUT=str(heartbeat_timeout or self.heartbeat_timeout),
            SX_NO_WORKER_GRACE="10",
            **(env or {}),
        )
        self._serial += 1
        proc = spawn(f"scheduler-{self._serial}", args, folder=self.folder, env=scheduler_env)
        self.scheduler = proc

        def ready() -> re.Match[str] | None:
            if not proc.alive():
                raise AssertionError(f"the scheduler exited with {proc.popen.returncode}:\n{proc.tail()}")
            return _SERVE_LINE.search(proc.output())

        match = wait_for(ready, within=START_TIMEOUT, what="the scheduler to listen")
        self.http_url, self.grpc_address = match.group(1), match.group(2)

    def stop_scheduler(self) -> int:
        """SIGTERM the scheduler and wait for it to exit; its exit code."""
        assert self.scheduler is not None
        self.scheduler.signal(signal.SIGTERM)
        return self.scheduler.wait(timeout=20)

    def ensure_group(self) -> None:
        with SyncOpenApiClient(self.http_url, namespace=NAMESPACE, group_id=GROUP) as client:
            self.app_key = client.ensure_group().app_key

    # -- workers -----------------------------------------------------------------------------------

    def worker_args(self, *, app_key: str | None = None) -> list[str]:
        return [
            sx_worker(),
            "run",
            *self.targets,
            "--server",
            self.grpc_address,
            "--namespace",
            NAMESPACE,
            "--group",
            GROUP,
            "--app-key",
            self.app_key if app_key is None else app_key,
            "--no-sync",
        ]

    def start_worker(self, *, wait: bool = True) -> Proc:
        """Start one ``sx-worker run TARGETS`` and (by default) wait until it registered."""
        self._serial += 1
        name = f"worker-{self._serial}"
        env = clean_env(
            E2E_EVENTS=str(self.events),
            SX_DATA_DIR=str(self.folder / name),
            SX_WORKER_ID=f"e2e-{name}",
            SX_SHUTDOWN_GRACE="15",
        )
        proc = spawn(name, self.worker_args(), folder=self.folder, env=env)
        self.workers.append(proc)
        if wait:
            self.wait_registered(proc)
        return proc

    def wait_registered(self, proc: Proc, *, times: int = 1) -> None:
        def registered() -> bool:
            if not proc.alive():
                raise AssertionError(f"{proc.name} exited with {proc.popen.returncode}:\n{proc.tail()}")
            return proc.output().count("registered with scheduler") >= times

        wait_for(registered, within=START_TIMEOUT, what=f"{proc.name} to register")

    def live_workers(self) -> list[Proc]:
        return [w for w in self.workers if w.alive()]

    def ensure_workers(self, count: int = 2) -> list[Proc]:
        """Start workers until ``count`` are alive; the live ones."""
        self.workers = self.live_workers()
        starting = [self.start_worker(wait=False) for _ in range(count - len(self.workers))]
        for proc in starting:
            self.wait_registered(proc)
        return self.workers

    def worker_by_pid(self, pid: int) -> Proc:
        for proc in self.workers:
            if proc.pid == pid:
                return proc
        raise AssertionError(f"no worker of this cluster has pid {pid}")

    # -- jobs --------------------------------------------------------------------------------------

    def definition(self, name: str) -> ProcessorDefinition:
        return E2E_REGISTRY.get(name)

    async def job_id(self, client: OpenApiClient, name_or_spec: str | JobSpec) -> int:
        """Create the job (once) from its definition in tests.e2e.jobs, or from a JobSpec."""
        spec = name_or_spec if isinstance(name_or_spec, JobSpec) else self.definition(name_or_spec).spec
        if spec.name not in self.job_ids:
            self.job_ids[spec.name] = await client.create_job(spec)
        return self.job_ids[spec.name]

    def stop(self) -> None:
        for proc in self.workers:
            proc.stop()
        if self.scheduler is not None:
            self.scheduler.stop()

    def logs(self) -> str:
        procs = [p for p in (self.scheduler, *self.workers) if p is not None]
        return "\n".join(f"----- {p.name} (pid {p.pid}) -----\n{p.tail()}" for p in procs)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A scheduler and two workers, shared by the tests of one module."""
    folder = tmp_path_factory.mktemp("cluster")
    instance = Cluster(folder)
    instance.events.mkdir()
    try:
        instance.start_scheduler()
        instance.ensure_group()
        instance.ensure_workers(2)
        yield instance
    finally:
        instance.stop()


@pytest.fixture
async def client(cluster: Cluster, request: pytest.FixtureRequest) -> AsyncIterator[OpenApiClient]:
    """An OpenAPI client of the cluster's group; on failure the processes' logs are printed."""
    async with OpenApiClient(cluster.http_url, namespace=NAMESPACE, group_id=GROUP, retries=5) as api:
        yield api
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        print(cluster.logs())


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Any:
    report = yield
    if report.when == "call":
        item.rep_call = report  # type: ignore[attr-defined]
    return report


async def wait_final(
    client: OpenApiClient, job_id: int, instance_id: int, *, within: float = DEADLINE
) -> InstanceDetail:
    """Poll the instance until it finished."""

    async def final() -> InstanceDetail | None:
        detail = await client.get_instance(job_id, instance_id)
        return detail if detail.status.finished else None

    return await eventually(final, within=within, what=f"instance {instance_id} of job {job_id} to finish")


async def wait_status(
    client: OpenApiClient,
    job_id: int,
    instance_id: int,
    status: InstanceStatus,
    *,
    within: float = DEADLINE,
) -> InstanceDetail:
    async def reached() -> InstanceDetail | None:
        detail = await client.get_instance(job_id, instance_id)
        return detail if detail.status is status else None

    return await eventually(reached, within=within, what=f"instance {instance_id} to be {status.name}")
