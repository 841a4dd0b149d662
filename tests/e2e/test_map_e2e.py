"""Map modes end to end: a real scheduler in this process and worker processes (``tests.e2e.map_worker``).

Workers are killed with SIGKILL to check failover (a non-master worker), resume (a batch master) and
cleanup (a grid master); a batch master is also stopped with SIGTERM, and a worker is replaced by a new
process on the same address.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from sx.processors import ExecuteMode, InstanceStatus, JobSpec, MapOptions, TaskStatus, TimeType, TriggerType
from sx.protos import peer_channel
from sx.protos.v1 import peer_pb2, peer_pb2_grpc
from sx.scheduler import SchedulerServer, SchedulerSettings
from sx.scheduler.dispatch import WorkerInfo
from sx.scheduler.store import Group, Instance, Namespace, NewInstance
from tests.e2e.conftest import DEADLINE, eventually

NS = "e2e"
GROUP = "maps"
APP_KEY = "e2e-key"
ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


class Cluster:
    """The scheduler plus worker subprocesses sharing one data_dir (one host)."""

    def __init__(self, server: SchedulerServer, tmp_path: Path) -> None:
        self.server = server
        self.tmp_path = tmp_path
        self.out = tmp_path / "out"
        self.out.mkdir()
        self.procs: list[subprocess.Popen[bytes]] = []

    def start_worker(self) -> subprocess.Popen[bytes]:
        return self.start_worker_with()

    def start_worker_with(self, **extra: str) -> subprocess.Popen[bytes]:
        """Start a worker process; ``extra`` adds environment variables (``SX_PEER_PORT``, ...)."""
        env = dict(os.environ)
        env.update(
            SX_SERVER=self.server.grpc_address,
            SX_NAMESPACE=NS,
            SX_GROUP_ID=GROUP,
            SX_APP_KEY=APP_KEY,
            SX_DATA_DIR=str(self.tmp_path / "worker-data"),
            E2E_OUT=str(self.out),
            PYTHONPATH=str(ROOT),
        )
        env.update(extra)
        index = len(self.procs)
        log = open(self.tmp_path / f"worker-{index}.log", "wb")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.e2e.map_worker"], env=env, stdout=log, stderr=log, cwd=ROOT
        )
        log.close()
        self.procs.append(proc)
        return proc

    async def wait_workers(self, count: int) -> None:
        async def enough() -> bool:
            return len(self.server.dispatcher.live_workers(NS, GROUP)) >= count

        await eventually(enough, what=f"{count} workers registered")

    async def job(self, mode: str, params: dict[str, Any], **map_options: Any) -> int:
        spec = JobSpec(
            name=f"fanout-{mode}-{time.monotonic_ns()}",
            class_name="e2e.fanout",
            execute_mode=ExecuteMode(mode),
            parameters=json.dumps(params),
            map=MapOptions(**map_options),
        )
        job = await self.server.store.create_job(
            namespace=NS, group_id=GROUP, spec=spec, enabled=True, managed=False, next_fire_time=None
        )
        return job.id

    async def run(self, job_id: int) -> Instance:
        now = datetime.now(UTC)
        instance = await self.server.store.create_instance(
            NewInstance(
                job_id=job_id,
                namespace=NS,
                group_id=GROUP,
                status=InstanceStatus.WAITING,
                trigger_type=TriggerType.API,
                time_type=TimeType.API,
                schedule_time=now,
                data_time=now,
            )
        )
        await self.server.dispatcher.instance_created(instance)
        return instance

    async def get(self, instance_id: int) -> Instance:
        instance = await self.server.store.get_instance(instance_id)
        assert instance is not None
        return instance

    async def finished(self, instance_id: int, within: float = DEADLINE) -> Instance:
        async def done() -> Instance | None:
            instance = await self.get(instance_id)
            return instance if instance.status.finished else None

        result: Instance = await eventually(done, within=within, what=f"instance {instance_id} finished")
        return result

    async def progress(self, instance_id: int) -> dict[str, Any]:
        instance = await self.get(instance_id)
        loaded: dict[str, Any] = json.loads(instance.progress) if instance.progress else {}
        return loaded

    def runs(self, instance_id: int) -> list[str]:
        lines: list[str] = []
        for path in self.out.glob("runs-*.txt"):
            lines += [x for x in path.read_text().splitlines() if x.startswith(f"{instance_id} ")]
        return lines

    def pid_of(self, worker_id: str) -> int:
        return int(worker_id.split("_")[-2])

    def proc_of(self, worker_id: str) -> subprocess.Popen[bytes]:
        return next(p for p in self.procs if p.pid == self.pid_of(worker_id))

    async def running_master(self, instance_id: int) -> str:
        """The worker id of the instance's master once it runs (polled with ``eventually``)."""

        async def master() -> str:
            current = await self.get(instance_id)
            return current.worker_id if current.status is InstanceStatus.RUNNING else ""

        found: str = await eventually(master, what=f"instance {instance_id} running")
        return found

    def other_worker(self, worker_id: str) -> WorkerInfo:
        """A live worker of the group other than ``worker_id``."""
        return next(w for w in self.server.dispatcher.live_workers(NS, GROUP) if w.worker_id != worker_id)

    async def knows(self, address: str, instance_id: int) -> bool:
        """Whether the worker at ``address`` holds anything of the instance (tasks, statuses, master)."""
        async with peer_channel(address, app_key=APP_KEY) as channel:
            reply = await peer_pb2_grpc.PeerStub(channel).CheckAlive(
                peer_pb2.CheckAliveRequest(instance_id=instance_id), timeout=5
            )
        return bool(reply.alive)

    async def holds_nothing(self, instance_id: int) -> bool:
        """No live worker holds anything of the instance (CheckAlive answers alive=False)."""
        for info in self.server.dispatcher.live_workers(NS, GROUP):
            async with peer_channel(info.address, app_key=APP_KEY) as channel:
                reply = await peer_pb2_grpc.PeerStub(channel).CheckAlive(
                    peer_pb2.CheckAliveRequest(instance_id=instance_id), timeout=5
                )
                if reply.alive:
                    return False
        return True

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@contextlib.asynccontextmanager
async def map_cluster(tmp_path: Path, **settings: Any) -> AsyncIterator[Cluster]:
    """A scheduler in this process with the group, quick heartbeats and ``settings``, and its workers."""
    options: dict[str, Any] = {
        "heartbeat_interval": 0.5,
        "heartbeat_timeout": 2.0,
        "no_worker_grace": 10.0,
        **settings,
    }
    scheduler = SchedulerSettings(data_dir=tmp_path / "scheduler", http_port=0, grpc_port=0, **options)
    async with SchedulerServer(scheduler) as server:
        await server.store.create_namespace(Namespace(id=NS, name=NS))
        await server.store.create_group(Group(namespace=NS, group_id=GROUP, app_key=APP_KEY))
        cluster = Cluster(server, tmp_path)
        try:
            yield cluster
        finally:
            cluster.stop()


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    async with map_cluster(tmp_path) as cluster:
        yield cluster


def _sum(n: int, nested: bool) -> int:
    total = sum(range(n))
    if nested:
        total += sum(-(i * 10 + 1) - (i * 10 + 2) for i in range(0, n, 2))
    return total


async def test_grid_map_reduce_nested_with_knobs(cluster: Cluster) -> None:
    for _ in range(2):
        cluster.start_worker()
    await cluster.wait_workers(2)
    n = 400
    job_id = await cluster.job("grid", {"n": n, "nested": True, "sleep": 0.005}, consumer_size=3, page_size=7)
    instance = await cluster.finished((await cluster.run(job_id)).id)
    assert instance.status is InstanceStatus.SUCCESS, instance.result
    body = json.loads(instance.result)
    assert body["count"] == body["distinct"] == n + n
    assert body["sum"] == _sum(n, True)
    assert len(body["peaks"]) == 2 and max(body["peaks"].values()) == 3  # consumerSize per worker
    progress = json.loads(instance.progress)
    assert progress["dispatch"]["maxBatch"] == 7  # pageSize
    names = {t["name"]: t for t in progress["taskProgress"]}
    assert names["level1"]["success"] == n and names["level2"]["success"] == n
    await eventually(lambda: cluster.holds_nothing(instance.id), what="nothing of the instance left")


@pytest.mark.parametrize("queue_size", [10_000, 8])
async def test_sigkill_of_a_worker_keeps_every_subtask_once(cluster: Cluster, queue_size: int) -> None:
    # With a tiny queue, map batches are taken in part: the victim's half-sent ones must not be
    # duplicated (or lost) when its tasks run again elsewhere.
    for _ in range(3):
        cluster.start_worker()
    await cluster.wait_workers(3)
    n = 600
    job_id = await cluster.job(
        "grid", {"n": n, "nested": True, "sleep": 0.01}, consumer_size=4, page_size=5, queue_size=queue_size
    )
    instance = await cluster.run(job_id)

    async def master() -> str:
        current = await cluster.get(instance.id)
        return current.worker_id if current.status is InstanceStatus.RUNNING else ""

    master_id = await eventually(master, what="instance running")
    await eventually(lambda: _some_runs(cluster, instance.id, 100), what="subtasks running")

    async def victim_found() -> subprocess.Popen[bytes] | None:
        # Subtasks ran, but not necessarily on a worker other than the master yet: wait for one.
        return next(
            (
                p
                for p in cluster.procs
                if p.pid != cluster.pid_of(master_id) and _ran_on(cluster, instance.id, p.pid)
            ),
            None,
        )

    victim = await eventually(victim_found, what="subtasks running on a worker other than the master")
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    done = await cluster.finished(instance.id)
    assert done.status is InstanceStatus.SUCCESS, done.result
    body = json.loads(done.result)
    assert body["count"] == body["distinct"] == 2 * n
    assert body["sum"] == _sum(n, True)


async def test_parallel_nested_maps_through_a_small_queue(cluster: Cluster) -> None:
    # Parallel keeps the tasks in the scheduler's store, which also counts the batches taken in part.
    for _ in range(2):
        cluster.start_worker()
    await cluster.wait_workers(2)
    n = 100
    job_id = await cluster.job(
        "parallel", {"n": n, "nested": True}, consumer_size=2, page_size=3, queue_size=4
    )
    instance = await cluster.finished((await cluster.run(job_id)).id)
    assert instance.status is InstanceStatus.SUCCESS, instance.result
    body = json.loads(instance.result)
    assert body["count"] == body["distinct"] == 2 * n
    assert body["sum"] == _sum(n, True)
    counts = await cluster.server.store.count_tasks(instance.id)
    assert counts == {TaskStatus.SUCCESS: 1 + 2 * n}  # every subtask stored once


async def test_kill_mid_run_cleans_up_everywhere(cluster: Cluster) -> None:
    for _ in range(2):
        cluster.start_worker()
    await cluster.wait_workers(2)
    job_id = await cluster.job("grid", {"n": 2000, "sleep": 0.05}, consumer_size=3)
    instance = await cluster.run(job_id)
    await eventually(lambda: _some_runs(cluster, instance.id, 20), what="subtasks running")
    assert await cluster.server.dispatcher.stop_instance(await cluster.get(instance.id), "test kill")
    done = await cluster.finished(instance.id)
    assert done.status is InstanceStatus.FAILED and "test kill" in done.result
    await eventually(lambda: cluster.holds_nothing(instance.id), what="nothing of the instance left")
    before = len(cluster.runs(instance.id))
    await asyncio.sleep(0.5)
    assert len(cluster.runs(instance.id)) == before  # nothing runs any more


@pytest.mark.parametrize("queue_size", [10_000, 50])
async def test_batch_master_sigkill_resumes_from_its_file(cluster: Cluster, queue_size: int) -> None:
    # With a small queue the root is still mapping when the master dies: the resumed root maps the
    # same batches again and only what the file does not have yet is queued.
    for _ in range(2):
        cluster.start_worker()
    await cluster.wait_workers(2)
    n = 3000
    job_id = await cluster.job(
        "batch", {"n": n, "sleep": 0.002}, consumer_size=5, page_size=20, queue_size=queue_size
    )
    instance = await cluster.run(job_id)

    async def running_master() -> str:
        current = await cluster.get(instance.id)
        return current.worker_id if current.status is InstanceStatus.RUNNING else ""

    master_id = await eventually(running_master, what="instance running")
    await eventually(lambda: _some_runs(cluster, instance.id, n // 3), what="a third of the subtasks ran")
    master_proc = next(p for p in cluster.procs if p.pid == cluster.pid_of(master_id))
    before_kill = len(cluster.runs(instance.id))
    master_proc.send_signal(signal.SIGKILL)
    master_proc.wait()
    cluster.start_worker()  # a fresh worker on the same host may take the resumed instance too
    done = await cluster.finished(instance.id, within=90)
    assert done.status is InstanceStatus.SUCCESS, done.result
    assert done.worker_id != master_id
    body = json.loads(done.result)
    assert body["count"] == body["distinct"] == n and body["sum"] == _sum(n, False)
    executions = len(cluster.runs(instance.id))
    # Resumed, not started over: what finished before the kill did not run again (a few in flight may).
    assert executions < n + before_kill // 2, (executions, before_kill)


async def test_grid_master_sigkill_leaves_nothing_on_the_other_workers(cluster: Cluster) -> None:
    for _ in range(2):
        cluster.start_worker()
    await cluster.wait_workers(2)
    job_id = await cluster.job("grid", {"n": 400, "sleep": 0.2}, consumer_size=2, page_size=10)
    instance = await cluster.run(job_id)
    master_id = await cluster.running_master(instance.id)
    other = cluster.other_worker(master_id)
    await eventually(
        lambda: _ran_async(cluster, instance.id, cluster.pid_of(other.worker_id)),
        what="subtasks on the other",
    )
    assert await cluster.knows(other.address, instance.id)
    master = cluster.proc_of(master_id)
    master.send_signal(signal.SIGKILL)
    master.wait()

    async def forgotten() -> bool:
        return not await cluster.knows(other.address, instance.id)

    # Its queued and running subtasks are dropped (no one would take their statuses) well before the
    # minute after which an undelivered status is given up.
    await eventually(forgotten, within=30, what="the other worker dropped the instance")
    before = len(cluster.runs(instance.id))
    await asyncio.sleep(0.5)
    assert len(cluster.runs(instance.id)) == before  # nothing of it runs there any more


async def test_worker_restarted_on_its_address_gets_its_lost_subtasks_sent_again(cluster: Cluster) -> None:
    for _ in range(2):
        cluster.start_worker()
    await cluster.wait_workers(2)
    n = 200
    job_id = await cluster.job("grid", {"n": n, "sleep": 0.2}, consumer_size=2, page_size=2)
    instance = await cluster.run(job_id)
    master_id = await cluster.running_master(instance.id)
    victim = cluster.other_worker(master_id)
    await eventually(
        lambda: _ran_async(cluster, instance.id, cluster.pid_of(victim.worker_id)),
        what="subtasks on the victim",
    )
    # The new process listens on the victim's port (SO_REUSEPORT) before the victim dies, so the
    # master never finds the address unreachable: only asking about the instance tells it the tasks
    # it sent there are gone.
    cluster.start_worker_with(SX_PEER_PORT=victim.address.rsplit(":", 1)[1])
    await cluster.wait_workers(3)
    proc = cluster.proc_of(victim.worker_id)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = await cluster.finished(instance.id)
    assert done.status is InstanceStatus.SUCCESS, done.result
    body = json.loads(done.result)
    assert body["count"] == body["distinct"] == n
    assert body["sum"] == _sum(n, False)


async def test_batch_master_sigterm_hands_the_instance_back_to_resume(cluster: Cluster) -> None:
    for _ in range(2):
        cluster.start_worker()
    await cluster.wait_workers(2)
    n = 3000
    job_id = await cluster.job("batch", {"n": n, "sleep": 0.002}, consumer_size=5, page_size=20)
    instance = await cluster.run(job_id)
    master_id = await cluster.running_master(instance.id)
    await eventually(lambda: _some_runs(cluster, instance.id, n // 3), what="a third of the subtasks ran")
    master_proc = cluster.proc_of(master_id)
    before_stop = len(cluster.runs(instance.id))
    master_proc.send_signal(signal.SIGTERM)
    assert master_proc.wait(timeout=30) == 0
    done = await cluster.finished(instance.id, within=90)
    assert done.status is InstanceStatus.SUCCESS, done.result
    assert done.worker_id != master_id
    body = json.loads(done.result)
    assert body["count"] == body["distinct"] == n and body["sum"] == _sum(n, False)
    executions = len(cluster.runs(instance.id))
    # Resumed, not started over: what finished before the stop did not run again (a few in flight may).
    assert executions < n + before_stop // 2, (executions, before_stop)


async def _ran_async(cluster: Cluster, instance_id: int, pid: int) -> bool:
    return _ran_on(cluster, instance_id, pid)


async def _some_runs(cluster: Cluster, instance_id: int, count: int) -> bool:
    return len(cluster.runs(instance_id)) >= count


def _ran_on(cluster: Cluster, instance_id: int, pid: int) -> bool:
    path = cluster.out / f"runs-{pid}.txt"
    return path.exists() and any(x.startswith(f"{instance_id} ") for x in path.read_text().splitlines())
