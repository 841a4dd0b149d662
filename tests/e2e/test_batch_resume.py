"""A batch instance whose master was SIGKILLed resumes where its task file is, and stale files go.

Each worker here has a data folder of its own (as on separate hosts). Before the fix the scheduler sent
the lost instance round robin, so another worker started it over (a third of the subtasks ran again),
and the dead master's task file stayed on its disk for ever.
"""

from __future__ import annotations

import json
import signal
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sx.processors import InstanceStatus
from tests.e2e.conftest import eventually
from tests.e2e.test_map_e2e import Cluster, _sum, map_cluster

pytestmark = pytest.mark.slow

N = 3000
"""Subtasks of the batch job; each sleeps 2 ms, so the master dies well before the end."""
RESUME_WAIT = 3.0
"""The scheduler's batch_resume_wait here: how long a lost instance waits for a holder of its file."""


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    async with map_cluster(tmp_path, no_worker_grace=30.0, batch_resume_wait=RESUME_WAIT) as cluster:
        yield cluster


def start(cluster: Cluster, worker_id: str) -> subprocess.Popen[bytes]:
    """A worker with its own id and data folder (the same ones again after a restart)."""
    return cluster.start_worker_with(SX_WORKER_ID=worker_id, SX_DATA_DIR=str(data_dir(cluster, worker_id)))


def data_dir(cluster: Cluster, worker_id: str) -> Path:
    return cluster.tmp_path / f"data-{worker_id}"


def task_files(cluster: Cluster, worker_id: str) -> list[Path]:
    return sorted((data_dir(cluster, worker_id) / "map").glob("instance-*.sqlite"))


async def kill_master_a_third_in(
    cluster: Cluster, procs: dict[str, subprocess.Popen[bytes]]
) -> tuple[int, str, int]:
    """Run the batch job, SIGKILL its master once a third of the subtasks ran; (instance, master, runs)."""
    job_id = await cluster.job("batch", {"n": N, "sleep": 0.002}, consumer_size=5, page_size=20)
    instance = await cluster.run(job_id)
    master = await cluster.running_master(instance.id)

    async def a_third() -> bool:
        return len(cluster.runs(instance.id)) >= N // 3

    await eventually(a_third, what="a third of the subtasks ran")
    assert task_files(cluster, master), "the master keeps no task file"
    procs[master].send_signal(signal.SIGKILL)
    procs[master].wait()
    return instance.id, master, len(cluster.runs(instance.id))


def check_result(result: str) -> None:
    body = json.loads(result)
    assert body["count"] == body["distinct"] == N and body["sum"] == _sum(N, False)


async def test_a_master_restarted_at_once_resumes_its_instance_from_its_file(cluster: Cluster) -> None:
    procs = {worker_id: start(cluster, worker_id) for worker_id in ("w-a", "w-b")}
    await cluster.wait_workers(2)
    instance_id, master, before_kill = await kill_master_a_third_in(cluster, procs)
    procs[master] = start(cluster, master)  # same id, same disk, right away

    done = await cluster.finished(instance_id, within=90)
    assert done.status is InstanceStatus.SUCCESS, done.result
    assert done.worker_id == master  # back where its file is, not started over on the other worker
    check_result(done.result)
    executions = len(cluster.runs(instance_id))
    # Resumed, not started over: what finished before the kill did not run again (a few in flight may).
    assert executions < N + before_kill // 2, (executions, before_kill)
    assert task_files(cluster, "w-a") == task_files(cluster, "w-b") == []


async def test_a_master_that_stays_away_is_waited_for_then_its_stale_file_is_removed(
    cluster: Cluster,
) -> None:
    procs = {worker_id: start(cluster, worker_id) for worker_id in ("w-a", "w-b")}
    await cluster.wait_workers(2)
    instance_id, master, _ = await kill_master_a_third_in(cluster, procs)
    other = "w-b" if master == "w-a" else "w-a"

    # Nobody holding the file comes back within the wait: the other worker starts it over.
    done = await cluster.finished(instance_id, within=90)
    assert done.status is InstanceStatus.SUCCESS, done.result
    assert done.worker_id == other
    check_result(done.result)
    assert [p.name for p in task_files(cluster, master)] == [f"instance-{instance_id}.sqlite"]

    # The old master comes back later: the scheduler tells it the file is of no more use.
    procs[master] = start(cluster, master)

    async def removed() -> bool:
        return task_files(cluster, master) == []

    await eventually(removed, what="the stale task file removed")
