"""ListWorkers with real worker processes: ``sx-worker serve`` and two ``sx-worker run``, listed through
the client and by ``sx-worker workers``; a worker told to stop shows as draining while it finishes its
instance, and is gone once it exited."""

from __future__ import annotations

import json
import signal
import subprocess
from importlib import metadata

from sx.processors import InstanceStatus
from sx.worker.openapi import OpenApiClient, WorkerInfo
from tests.e2e.conftest import GROUP, NAMESPACE, Cluster, clean_env, eventually, sx_worker, wait_final


def worker_ids(cluster: Cluster) -> set[str]:
    return {f"e2e-{proc.name}" for proc in cluster.live_workers()}


async def test_the_connected_worker_processes_are_listed(cluster: Cluster, client: OpenApiClient) -> None:
    cluster.ensure_workers(2)
    expected = worker_ids(cluster)

    async def both() -> list[WorkerInfo] | None:
        page = await client.list_workers()
        return list(page.workers) if {w.worker_id for w in page.workers} == expected else None

    listed = await eventually(both, what=f"the workers {sorted(expected)} listed")
    version = metadata.version("sx-worker")
    for worker in listed:
        assert worker.address.rsplit(":", 1)[1].isdigit() and worker.version == version
        assert "e2e.echo" in worker.processors and worker.last_heartbeat and worker.connected_at
        assert not worker.draining and worker.running >= 0 and worker.capacity >= 0
    first = await client.list_workers(page_num=1, page_size=1)
    second = await client.list_workers(page_num=2, page_size=1)
    assert first.total == second.total == 2
    assert {w.worker_id for w in (*first.workers, *second.workers)} == expected


def test_sx_worker_workers_lists_them(cluster: Cluster) -> None:
    cluster.ensure_workers(2)
    args = [sx_worker(), "workers", "--server", cluster.http_url, "--namespace", NAMESPACE, "--group", GROUP]
    done = subprocess.run([*args, "--output", "json"], env=clean_env(), capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr
    page = json.loads(done.stdout)
    assert {w["workerId"] for w in page["workers"]} == worker_ids(cluster) and page["total"] == 2
    table = subprocess.run(args, env=clean_env(), capture_output=True, text=True, timeout=60)
    assert table.returncode == 0, table.stderr
    assert table.stdout.split()[:2] == ["WORKER", "ADDRESS"]
    for worker_id in worker_ids(cluster):
        assert worker_id in table.stdout


async def test_a_stopping_worker_is_listed_as_draining_until_it_exits(
    cluster: Cluster, client: OpenApiClient
) -> None:
    cluster.ensure_workers(2)
    job_id = await cluster.job_id(client, "e2e.wait_async")
    instance_id = await client.execute_job(job_id)

    async def running() -> str | None:
        detail = await client.get_instance(job_id, instance_id)
        return detail.executor if detail.status == InstanceStatus.RUNNING and detail.executor else None

    worker_id = (await eventually(running, what=f"instance {instance_id} running")).split("@", 1)[0]
    proc = next(p for p in cluster.live_workers() if f"e2e-{p.name}" == worker_id)
    proc.signal(signal.SIGTERM)  # it keeps running its instance for the shutdown grace (15 s)

    async def draining() -> WorkerInfo | None:
        found = [w for w in (await client.list_workers()).workers if w.worker_id == worker_id]
        return found[0] if found and found[0].draining else None

    listed = await eventually(draining, what=f"{worker_id} listed as draining")
    assert listed.assigned == 1
    await client.stop_instance(job_id, instance_id)
    await wait_final(client, job_id, instance_id)
    assert proc.wait(timeout=60) == 0

    async def gone() -> bool:
        return worker_id not in {w.worker_id for w in (await client.list_workers()).workers}

    await eventually(gone, what=f"{worker_id} no longer listed")
    cluster.ensure_workers(2)
