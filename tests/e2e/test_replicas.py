"""Three scheduler replicas on one PostgreSQL database, four workers in two groups, timed jobs firing
every two seconds and a steady rate of ExecuteJob calls spread over the replicas; then one failure per
test: SIGKILL of a group's owner, SIGSTOP of an owner past its lease, and a rolling restart of every
replica. After each: no fire ran twice, no instance was lost (every one ends, none REJECTED or FAILED),
every group went on dispatching, and an instance whose worker stayed alive through its owner's death
ended SUCCESS on its first run.

All processes are real (``sx-worker serve`` and ``sx-worker run``); workers are given the three
replicas' addresses and follow their group's owner. Counts come from the store (SQL) and from the
workers' own records of each run.

The suite's load is 30 jobs every two seconds, so that on a busy 2-core machine maxConcurrency stays a
matter of replicas rather than of CPU; ``SX_TEST_REPLICA_LOAD=full`` runs the same tests with 100 jobs due
every second.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import asyncpg
import pytest

from sx.processors import InstanceStatus, JobSpec, cron
from sx.worker import OpenApiClient, SyncOpenApiClient
from sx.worker.openapi import InstanceDetail
from tests.e2e.conftest import (
    NAMESPACE,
    START_TIMEOUT,
    Proc,
    clean_env,
    eventually,
    spawn,
    sx_worker,
    wait_for,
)
from tests.e2e.jobs import events
from tests.postgres import PostgresServer

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.timeout(300)]

GROUPS = ("alpha", "beta")
FULL_LOAD = os.environ.get("SX_TEST_REPLICA_LOAD", "light") == "full"
JOBS_PER_GROUP = 50 if FULL_LOAD else 15
TICK = cron("* * * * * ?") if FULL_LOAD else cron("*/2 * * * * ?")
# Six seconds of a job's fires may wait at either load before the next is rejected by maxConcurrency.
TICK_CONCURRENCY = 6 if FULL_LOAD else 3
LEASE_SECONDS = 4
SERVE_LINE = re.compile(r"scheduler: OpenAPI (http://\S+) .*gRPC (\S+)")
FINAL = (InstanceStatus.SUCCESS, InstanceStatus.FAILED, InstanceStatus.REJECTED)


@dataclass(eq=False)
class Replica:
    proc: Proc
    http_url: str
    grpc_address: str

    @property
    def ports(self) -> tuple[str, str]:
        return self.http_url.rpartition(":")[2], self.grpc_address.rpartition(":")[2]


@dataclass(eq=False)
class Cluster:
    folder: Path
    database_url: str
    replicas: list[Replica] = field(default_factory=list)
    workers: list[Proc] = field(default_factory=list)
    app_keys: dict[str, str] = field(default_factory=dict)
    tick_jobs: dict[str, list[int]] = field(default_factory=dict)
    api_jobs: dict[str, int] = field(default_factory=dict)
    hold_jobs: dict[str, int] = field(default_factory=dict)
    serial: int = 0

    @property
    def events(self) -> Path:
        return self.folder / "events"

    def serve(self, ports: tuple[str, str] = ("0", "0")) -> Replica:
        self.serial += 1
        args = [sx_worker(), "serve", "--http-port", ports[0], "--grpc-port", ports[1]]
        env = clean_env(
            SX_DATABASE_URL=self.database_url,
            SX_HEARTBEAT_INTERVAL="1",
            SX_HEARTBEAT_TIMEOUT="5",
            SX_LEASE_SECONDS=str(LEASE_SECONDS),
            SX_NO_WORKER_GRACE="60",
        )
        proc = spawn(f"replica-{self.serial}", args, folder=self.folder, env=env)

        def ready() -> re.Match[str] | None:
            if not proc.alive():
                raise AssertionError(f"{proc.name} exited with {proc.popen.returncode}:\n{proc.tail()}")
            return SERVE_LINE.search(proc.output())

        match = wait_for(ready, within=START_TIMEOUT, what=f"{proc.name} to listen")
        return Replica(proc, match.group(1), match.group(2))

    def start_worker(self, group: str) -> Proc:
        self.serial += 1
        name = f"worker-{group}-{self.serial}"
        servers = ",".join(r.grpc_address for r in self.replicas)
        args = [sx_worker(), "run", "tests.e2e.replica_jobs", "--server", servers, "--namespace", NAMESPACE,
                "--group", group, "--app-key", self.app_keys[group], "--no-sync"]  # fmt: skip
        env = clean_env(E2E_EVENTS=str(self.events), SX_DATA_DIR=str(self.folder / name), SX_WORKER_ID=name)
        proc = spawn(name, args, folder=self.folder, env=env)
        self.workers.append(proc)
        return proc

    def replica_by_pid(self, pid: int) -> Replica:
        for replica in self.replicas:
            if replica.proc.pid == pid:
                return replica
        raise AssertionError(f"no replica has pid {pid}")

    def logs(self) -> str:
        procs = [r.proc for r in self.replicas] + self.workers
        return "\n".join(f"----- {p.name} (pid {p.pid}) -----\n{p.tail(60)}" for p in procs)

    def stop(self) -> None:
        for proc in self.workers:
            proc.stop()
        for replica in self.replicas:
            replica.proc.stop()


@pytest.fixture(scope="module")
def database() -> Iterator[str]:
    server = PostgresServer.find()
    if server.unavailable is not None:
        pytest.skip(f"SKIPPED LOUDLY: scheduler replicas need PostgreSQL: {server.unavailable}")
    url = server.create_database()
    try:
        yield url
    finally:
        server.drop_databases()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, database: str) -> Iterator[Cluster]:
    folder = tmp_path_factory.mktemp("replicas")
    running = Cluster(folder, database)
    running.events.mkdir()
    try:
        running.replicas = [running.serve() for _ in range(3)]
        for i, group in enumerate(GROUPS):
            # Each group made through another replica: the OpenAPI answers on every one.
            with SyncOpenApiClient(
                running.replicas[i].http_url, namespace=NAMESPACE, group_id=group
            ) as client:
                running.app_keys[group] = client.ensure_group().app_key
        # Workers first: timed jobs made before any worker could take their fires would pile up.
        workers = [running.start_worker(group) for group in GROUPS for _ in range(2)]
        for proc in workers:
            wait_for(partial(_registered, proc), within=START_TIMEOUT, what=f"{proc.name} to register")
        for i, group in enumerate(GROUPS):
            with SyncOpenApiClient(
                running.replicas[i].http_url, namespace=NAMESPACE, group_id=group
            ) as client:
                tick = JobSpec(name="tick", class_name="e2e.replica.tick", max_concurrency=TICK_CONCURRENCY)
                running.tick_jobs[group] = [
                    client.create_job(tick.model_copy(update={"name": f"tick-{n}", "schedule": TICK}))
                    for n in range(JOBS_PER_GROUP)
                ]
                running.api_jobs[group] = client.create_job(
                    tick.model_copy(update={"name": "on-call", "max_concurrency": 1000})
                )
                running.hold_jobs[group] = client.create_job(
                    JobSpec(name="hold", class_name="e2e.replica.hold", max_concurrency=10)
                )
        yield running
    except BaseException:
        print(running.logs())
        raise
    finally:
        running.stop()


def _registered(proc: Proc) -> bool:
    return "registered with scheduler" in proc.output()


async def _sql(url: str) -> asyncpg.Connection:
    return await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"), timeout=10)


async def owners(cluster: Cluster) -> dict[str, int]:
    """Group -> pid of the replica holding its lease now (replica ids carry their pid)."""
    conn = await _sql(cluster.database_url)
    try:
        rows = await conn.fetch("SELECT group_id, holder FROM sx_group_leases WHERE expires_at > now()")
    finally:
        await conn.close()
    return {row["group_id"]: int(row["holder"].split("_")[-2]) for row in rows if row["holder"]}


async def owner_of(cluster: Cluster, group: str) -> Replica:
    """The replica holding ``group``'s lease, once one does: between tests (a replica just restarted, or
    an owner late to renew under load) a group can be briefly without a live lease."""

    async def holder() -> int | None:
        return (await owners(cluster)).get(group)

    return cluster.replica_by_pid(await eventually(holder, what=f"a replica to hold group {group}'s lease"))


@contextlib.asynccontextmanager
async def steady_calls(cluster: Cluster) -> AsyncIterator[list[int]]:
    """ExecuteJob about five times a second, round robin over the replicas (a load balancer's way);
    a replica that is down at that moment is skipped, as a balancer's health check would."""
    made: list[int] = []

    async def call() -> None:
        n = 0
        while True:
            n += 1
            replica = cluster.replicas[n % len(cluster.replicas)]
            group = GROUPS[n % len(GROUPS)]
            if replica.proc.alive():
                with contextlib.suppress(Exception):
                    async with OpenApiClient(replica.http_url, namespace=NAMESPACE, group_id=group) as api:
                        made.append(await api.execute_job(cluster.api_jobs[group], f"call-{n}"))
            await asyncio.sleep(0.2)

    task = asyncio.create_task(call())
    try:
        yield made
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def audit(cluster: Cluster, since_id: int, disrupted_at: float) -> None:
    """Every instance made after ``since_id`` until now ends (within a minute), none REJECTED or FAILED;
    no fire ran twice; every group ran timed fires scheduled after the disruption. (The jobs keep
    firing meanwhile: instances made after the audit began are not its business.)"""
    conn = await _sql(cluster.database_url)
    try:
        until_id = int(await conn.fetchval("SELECT coalesce(max(id), 0) FROM sx_instances"))

        async def settled() -> bool | None:
            pending = await conn.fetchval(
                "SELECT count(*) FROM sx_instances WHERE id > $1 AND id <= $2 AND status NOT IN (4, 5, 9)",
                since_id,
                until_id,
            )
            return True if pending == 0 else None

        await eventually(settled, within=90, what="every instance of the window to end")
        rows = await conn.fetch(
            "SELECT id, job_id, group_id, status, trigger_type, schedule_time, result FROM sx_instances"
            " WHERE id > $1 AND id <= $2",
            since_id,
            until_id,
        )
    finally:
        await conn.close()
    bad = [dict(r) for r in rows if r["status"] != InstanceStatus.SUCCESS]
    assert bad == [], f"instances that did not succeed: {bad[:10]}"
    fires = Counter((r["job_id"], r["schedule_time"]) for r in rows if r["trigger_type"] != 3)
    assert [key for key, n in fires.items() if n > 1] == []
    runs = Counter(
        e["instance"]
        for e in events(cluster.events, "e2e.replica.tick")
        if since_id < e["instance"] <= until_id
    )
    assert [i for i, n in runs.items() if n > 1] == [], "instances that ran twice"
    assert set(runs) == {r["id"] for r in rows if r["job_id"] in _tick_ids(cluster)}
    for group in GROUPS:
        later = [
            r
            for r in rows
            if r["group_id"] == group
            and r["trigger_type"] != 3
            and r["schedule_time"].timestamp() > disrupted_at + 1
        ]
        assert later, f"group {group}: no timed fire ran after the disruption"


def _tick_ids(cluster: Cluster) -> set[int]:
    return {job for jobs in cluster.tick_jobs.values() for job in jobs} | set(cluster.api_jobs.values())


async def last_instance_id(cluster: Cluster) -> int:
    conn = await _sql(cluster.database_url)
    try:
        return int(await conn.fetchval("SELECT coalesce(max(id), 0) FROM sx_instances"))
    finally:
        await conn.close()


async def window(seconds: float) -> None:
    await asyncio.sleep(seconds)  # load runs meanwhile; the audit waits for its effects


async def test_steady_state_every_replica_claims_fires_and_the_owners_dispatch(cluster: Cluster) -> None:
    try:
        since = await last_instance_id(cluster)
        start = time.time()
        async with steady_calls(cluster) as made:
            await window(8)
        assert made, "no ExecuteJob call succeeded"
        held = await eventually(lambda: _held_leases(cluster), what="every group to have an owner")
        # Two groups, three replicas: one replica owns no group, yet its trigger engine claims fires
        # and its OpenAPI takes calls; they reach the owners at once (no fire waits or is rejected).
        idle = [r for r in cluster.replicas if r.proc.pid not in held.values()]
        assert idle
        for replica in idle:
            with SyncOpenApiClient(replica.http_url, namespace=NAMESPACE, group_id=GROUPS[0]) as client:
                page = client.list_workers()
            assert page.total == 2  # the owner's workers, as it published them
        await audit(cluster, since, start)
        # StopInstance on a replica that does not dispatch the group reaches the worker running it.
        group = GROUPS[0]
        async with OpenApiClient(idle[0].http_url, namespace=NAMESPACE, group_id=group) as api:
            job_id = cluster.hold_jobs[group]
            held_id = await api.execute_job(job_id, str(cluster.folder / "never-opened"))
            await eventually(
                lambda: _status_is(api, job_id, held_id, InstanceStatus.RUNNING), what="it to run"
            )
            await api.stop_instance(job_id, held_id)
            detail = await eventually(
                lambda: _final(api, job_id, held_id), what="the stopped instance to end"
            )
        assert detail.status is InstanceStatus.FAILED and detail.result.startswith("killed"), detail
    except BaseException:
        print(cluster.logs())
        raise


async def test_sigkill_of_an_owner(cluster: Cluster, tmp_path: Path) -> None:
    try:
        group = GROUPS[0]
        victim = await owner_of(cluster, group)
        gate = tmp_path / "gate"
        async with OpenApiClient(victim.http_url, namespace=NAMESPACE, group_id=group) as api:
            held_id = await api.execute_job(cluster.hold_jobs[group], str(gate))
            stopped_id = await api.execute_job(cluster.hold_jobs[group], str(tmp_path / "never-opened"))
            for instance_id in (held_id, stopped_id):
                await eventually(
                    partial(_status_is, api, cluster.hold_jobs[group], instance_id, InstanceStatus.RUNNING),
                    what="the held instances to run",
                )
        since = await last_instance_id(cluster)
        killed_at = time.time()
        other = next(r for r in cluster.replicas if r is not victim)
        async with steady_calls(cluster) as made:
            # A stop asked on another replica while the owner is paused: its signal dies with the owner,
            # and the group's next owner applies the stop kept in the store.
            victim.proc.signal(signal.SIGSTOP)
            async with OpenApiClient(other.http_url, namespace=NAMESPACE, group_id=group) as api:
                await api.stop_instance(cluster.hold_jobs[group], stopped_id)
            victim.proc.signal(signal.SIGKILL)
            victim.proc.wait(timeout=20)
            await eventually(
                lambda: _owned_elsewhere(cluster, group, victim), what="another replica to own the group"
            )
            gate.touch()
            await window(6)
            # Back at its ports, so the workers' address lists hold again.
            cluster.replicas[cluster.replicas.index(victim)] = cluster.serve(victim.ports)
        assert made
        await audit(cluster, since, killed_at)
        live = next(r for r in cluster.replicas if r.proc.alive())
        async with OpenApiClient(live.http_url, namespace=NAMESPACE, group_id=group) as api:
            detail = await api.get_instance(cluster.hold_jobs[group], held_id)
            stopped = await eventually(
                lambda: _final(api, cluster.hold_jobs[group], stopped_id), what="the stopped instance to end"
            )
        assert detail.status is InstanceStatus.SUCCESS, detail
        assert detail.result == "held attempt=0"
        assert stopped.status is InstanceStatus.FAILED and stopped.result.startswith("killed"), stopped
        assert [e["instance"] for e in events(cluster.events, "e2e.replica.hold")].count(held_id) == 1
    except BaseException:
        print(cluster.logs())
        raise


async def _status_is(
    api: OpenApiClient, job_id: int, instance_id: int, status: InstanceStatus
) -> bool | None:
    return True if (await api.get_instance(job_id, instance_id)).status is status else None


async def _final(api: OpenApiClient, job_id: int, instance_id: int) -> InstanceDetail | None:
    detail = await api.get_instance(job_id, instance_id)
    return detail if detail.status.finished else None


async def _owned_elsewhere(cluster: Cluster, group: str, old: Replica) -> bool | None:
    pid = (await owners(cluster)).get(group)
    return True if pid is not None and pid != old.proc.pid else None


async def test_sigstop_of_an_owner_past_its_lease(cluster: Cluster) -> None:
    try:
        group = GROUPS[1]
        victim = await owner_of(cluster, group)
        since = await last_instance_id(cluster)
        paused_at = time.time()
        async with steady_calls(cluster):
            victim.proc.signal(signal.SIGSTOP)
            try:
                await eventually(
                    lambda: _owned_elsewhere(cluster, group, victim), what="another replica to own the group"
                )
                await window(3)
            finally:
                victim.proc.signal(signal.SIGCONT)
            # Woken, it finds its lease gone and lets the group be (its writes are fenced meanwhile).
            wait_for(
                lambda: "lost the lease of group" in victim.proc.output(),
                within=30,
                what="the woken replica to notice",
            )
            await window(4)
        await audit(cluster, since, paused_at)
    except BaseException:
        print(cluster.logs())
        raise


async def test_rolling_restart(cluster: Cluster) -> None:
    try:
        since = await last_instance_id(cluster)
        started = time.time()
        async with steady_calls(cluster):
            for i, replica in enumerate(list(cluster.replicas)):
                replica.proc.signal(signal.SIGTERM)
                assert replica.proc.wait(timeout=30) == 0
                # Every part stopped in its time (a hung one is logged with the tasks' stacks).
                assert "the tasks now:" not in replica.proc.output(), replica.proc.tail(200)
                cluster.replicas[i] = cluster.serve(replica.ports)
                await eventually(lambda: _all_owned(cluster), what="every group to have an owner")
            await window(4)
        await audit(cluster, since, started)
    except BaseException:
        print(cluster.logs())
        raise


async def _all_owned(cluster: Cluster) -> bool | None:
    return True if await _held_leases(cluster) else None


async def _held_leases(cluster: Cluster) -> dict[str, int] | None:
    """Group -> owner pid once every group has a live lease (an owner may be late to renew under load)."""
    held = await owners(cluster)
    return held if set(held) == set(GROUPS) else None
