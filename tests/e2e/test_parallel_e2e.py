"""Parallel mode end to end: subtasks kept by the scheduler, listed and retried through the OpenAPI.

A real scheduler runs in this process; two worker processes run this module (``python -m
tests.e2e.test_parallel_e2e``), which registers ``e2e.flaky``: a map-reduce whose tasks named in
``fail`` fail until the file ``$E2E_OUT/healed`` exists.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from sx.processors import (
    ExecuteMode,
    InstanceStatus,
    JobContext,
    JobSpec,
    MapReduceProcessor,
    ProcessResult,
    Registry,
    TaskStatus,
    processor,
)
from sx.scheduler import SchedulerServer, SchedulerSettings
from sx.scheduler.store import Group, Namespace
from tests.e2e.test_map_e2e import APP_KEY, GROUP, NS, ROOT, Cluster

pytestmark = pytest.mark.slow

registry = Registry()


def _out() -> Path:
    return Path(os.environ["E2E_OUT"])


def _record(ctx: JobContext) -> None:
    with open(_out() / f"runs-{os.getpid()}.txt", "a") as file:
        file.write(f"{ctx.instance_id} {ctx.task_id} {ctx.task}\n")


@processor(name="e2e.flaky", registry=registry)
class Flaky(MapReduceProcessor):
    """Parameters (JSON): ``n`` items; the items in ``fail`` fail until ``$E2E_OUT/healed`` exists."""

    async def process(self, ctx: JobContext) -> object:
        params = json.loads(ctx.job_parameters or "{}")
        if ctx.is_root_task:
            await ctx.map_async(list(range(int(params["n"]))), "item")
            return "root"
        _record(ctx)
        if ctx.task in params.get("fail", []) and not (_out() / "healed").exists():
            return ProcessResult.failure(f"item {ctx.task} is not ready")
        return str(ctx.task * 10)

    def reduce(self, ctx: JobContext) -> str:
        seen = sorted(
            int(result)
            for task_id, result in ctx.task_results.items()
            if task_id != 0 and ctx.task_statuses[task_id] is TaskStatus.SUCCESS
        )
        return json.dumps({"values": seen, "tasks": len(ctx.task_results)})


class ParallelCluster(Cluster):
    def start_worker(self) -> subprocess.Popen[bytes]:
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
        log = open(self.tmp_path / f"worker-{len(self.procs)}.log", "wb")  # noqa: SIM115 - closed below
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.e2e.test_parallel_e2e"], env=env, stdout=log, stderr=log, cwd=ROOT
        )
        log.close()
        self.procs.append(proc)
        return proc


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[ParallelCluster]:
    settings = SchedulerSettings(
        data_dir=tmp_path / "scheduler",
        http_port=0,
        grpc_port=0,
        heartbeat_interval=0.5,
        heartbeat_timeout=2.0,
        no_worker_grace=10.0,
    )
    async with SchedulerServer(settings) as server:
        await server.store.create_namespace(Namespace(id=NS, name=NS))
        await server.store.create_group(Group(namespace=NS, group_id=GROUP, app_key=APP_KEY))
        cluster = ParallelCluster(server, tmp_path)
        try:
            yield cluster
        finally:
            cluster.stop()


async def _api(client: httpx.AsyncClient, path: str, **params: Any) -> Any:
    response = await client.post(path, json={"namespace": NS, "groupId": GROUP, **params})
    body = response.json()
    assert body["success"], body
    return body["data"]


async def test_failed_tasks_are_listed_and_retried_until_the_instance_succeeds(
    cluster: ParallelCluster,
) -> None:
    for _ in range(2):
        cluster.start_worker()
    await cluster.wait_workers(2)
    n, fail = 20, [3, 11, 17]
    spec = JobSpec(
        name="flaky-parallel",
        class_name="e2e.flaky",
        execute_mode=ExecuteMode.PARALLEL,
        parameters=json.dumps({"n": n, "fail": fail}),
    )
    job = await cluster.server.store.create_job(
        namespace=NS, group_id=GROUP, spec=spec, enabled=True, managed=False, next_fire_time=None
    )
    instance = await cluster.finished((await cluster.run(job.id)).id)
    assert instance.status is InstanceStatus.FAILED, instance.result
    assert "3 of 21 task(s) failed" in instance.result

    async with httpx.AsyncClient(base_url=cluster.server.http_url, timeout=30) as client:
        listed = await _api(
            client, "/openapi/v1/instance/tasks", jobId=job.id, instanceId=instance.id, pageSize=100
        )
        assert listed["total"] == n + 1
        by_id = {t["taskId"]: t for t in listed["tasks"]}
        assert by_id[0]["taskName"] == "MAP_TASK_ROOT" and by_id[0]["status"] == 4
        failed = await _api(
            client, "/openapi/v1/instance/tasks", jobId=job.id, instanceId=instance.id, status="5"
        )
        failed_ids = [t["taskId"] for t in failed["tasks"]]
        assert len(failed_ids) == len(fail)
        assert all(t["result"].endswith("is not ready") and t["attempt"] == 1 for t in failed["tasks"])
        assert {t["workerAddr"] for t in listed["tasks"]} <= {
            w.address for w in cluster.server.dispatcher.live_workers(NS, GROUP)
        }

        (cluster.out / "healed").touch()
        retried = await _api(
            client,
            "/openapi/v1/instance/retryTasks",
            jobId=job.id,
            instanceId=instance.id,
            taskIds=",".join(map(str, failed_ids)),
        )
        assert retried["reopened"] is True and retried["taskIds"] == sorted(failed_ids)
        done = await cluster.finished(instance.id)
        assert done.status is InstanceStatus.SUCCESS, done.result
        body = json.loads(done.result)
        assert body == {"values": [i * 10 for i in range(n)], "tasks": n + 1}

        after = await _api(
            client, "/openapi/v1/instance/tasks", jobId=job.id, instanceId=instance.id, pageSize=100
        )
        statuses = {t["taskId"]: (t["status"], t["attempt"]) for t in after["tasks"]}
        assert all(status == 4 for status, _ in statuses.values())
        assert {i for i, (_, attempt) in statuses.items() if attempt == 2} == set(failed_ids)

    # Only the failed tasks ran again; every other task ran once, and the root did not run again.
    runs: dict[str, int] = {}
    for line in cluster.runs(instance.id):
        value = line.split()[2]
        runs[value] = runs.get(value, 0) + 1
    assert runs == {str(i): (2 if i in fail else 1) for i in range(n)}


async def main() -> None:
    from sx.worker import Worker, WorkerSettings

    worker = Worker(WorkerSettings(), registry=registry)
    worker.alive_interval = 0.5
    worker.progress_interval = 0.5
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, lambda: loop.create_task(worker.shutdown(grace=2.0)))
    await worker.run()


if __name__ == "__main__":
    asyncio.run(main())
