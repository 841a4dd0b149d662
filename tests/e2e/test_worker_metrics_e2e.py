"""A worker process's operator port (``--metrics-port``): its Prometheus metrics move as jobs run, and
``/health/ready`` follows its registration with the scheduler (503 while the scheduler is down)."""

from __future__ import annotations

import re
import socket
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from sx.processors import InstanceStatus, JobSpec, Registry, use_registry
from sx.worker.openapi import OpenApiClient
from tests.e2e.conftest import (
    DEADLINE,
    GROUP,
    NAMESPACE,
    START_TIMEOUT,
    Cluster,
    Proc,
    clean_env,
    eventually,
    spawn,
    wait_final,
    wait_for,
)

pytestmark = pytest.mark.slow

JOBS = Registry()
with use_registry(JOBS):
    from tests.e2e import metrics_jobs

_SERVING = re.compile(r"serving metrics and health on (http://\S+)")

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def free_port() -> int:
    """A port free now (0 turns the metrics port off, so the worker cannot pick one itself)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def metered(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Cluster, Proc, str]]:
    """A scheduler and one worker serving its metrics on a free port; (cluster, worker, metrics URL)."""
    cluster = Cluster(tmp_path_factory.mktemp("metered"), targets=("tests.e2e.metrics_jobs",))
    cluster.events.mkdir()
    try:
        cluster.start_scheduler()
        cluster.ensure_group()
        worker = spawn(
            "worker-metered",
            [*cluster.worker_args(), "--metrics-port", str(free_port())],
            folder=cluster.folder,
            env=clean_env(SX_DATA_DIR=str(cluster.folder / "worker-metered"), SX_WORKER_ID="e2e-metered"),
        )
        cluster.workers.append(worker)
        cluster.wait_registered(worker)
        found = wait_for(lambda: _SERVING.search(worker.output()), within=START_TIMEOUT, what="metrics URL")
        yield cluster, worker, found.group(1)
    finally:
        cluster.stop()


@pytest.fixture
async def api(metered: tuple[Cluster, Proc, str]) -> AsyncIterator[OpenApiClient]:
    async with OpenApiClient(metered[0].http_url, namespace=NAMESPACE, group_id=GROUP) as client:
        yield client


def scrape(url: str) -> Samples:
    response = httpx.get(f"{url}/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(found: Samples, name: str, **labels: str) -> float:
    return found.get((name, frozenset(labels.items())), 0.0)


def spec(name: str) -> JobSpec:
    return JOBS.get(name).spec


async def run(cluster: Cluster, api: OpenApiClient, name: str) -> InstanceStatus:
    job_id = await cluster.job_id(api, spec(name))
    instance_id = await api.execute_job(job_id)
    return (await wait_final(api, job_id, instance_id)).status


async def test_counters_move_when_jobs_run(metered: tuple[Cluster, Proc, str], api: OpenApiClient) -> None:
    cluster, _, url = metered
    before = scrape(url)
    assert value(before, "sx_worker_connected") == 1
    assert await run(cluster, api, "metrics.plain") is InstanceStatus.SUCCESS
    assert await run(cluster, api, "metrics.fails") is InstanceStatus.FAILED
    assert await run(cluster, api, "metrics.map") is InstanceStatus.SUCCESS

    after = scrape(url)

    def moved(name: str, by: int, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels) >= by

    assert moved("sx_worker_instances_finished_total", 2, status="success")
    assert moved("sx_worker_instances_finished_total", 1, status="failed")
    assert moved("sx_worker_hook_seconds_count", 1, processor="metrics.plain", hook="process")
    # The map instance's root and every subtask ran its process hook; all were sent by its master.
    subtasks = metrics_jobs.SUBTASKS
    assert moved("sx_worker_hook_seconds_count", 1 + subtasks, processor="metrics.map", hook="process")
    assert moved("sx_worker_subtasks_dispatched_total", 1 + subtasks)
    assert moved("sx_worker_subtasks_finished_total", 1 + subtasks, status="success")
    assert value(after, "sx_worker_instances_running") == 0
    assert value(after, "sx_worker_map_queue_depth") == 0

    async def all_acknowledged() -> bool:
        return value(scrape(url), "sx_worker_report_backlog") == 0

    await eventually(all_acknowledged, what="the worker's reports to be acknowledged")


def test_ready_follows_the_scheduler(metered: tuple[Cluster, Proc, str]) -> None:
    cluster, _, url = metered
    assert httpx.get(f"{url}/health/live").json()["data"] == {"status": "ok"}
    assert httpx.get(f"{url}/health/ready").status_code == 200
    reconnects = value(scrape(url), "sx_worker_reconnects_total")

    cluster.stop_scheduler()

    def not_ready() -> httpx.Response | None:
        response = httpx.get(f"{url}/health/ready")
        return response if response.status_code == 503 else None

    response = wait_for(not_ready, within=DEADLINE, what="/health/ready to answer 503")
    assert response.json()["message"].startswith("not ready: not registered with a scheduler")
    assert httpx.get(f"{url}/health/live").status_code == 200  # the worker itself is fine
    assert value(scrape(url), "sx_worker_connected") == 0

    cluster.start_scheduler()
    wait_for(
        lambda: httpx.get(f"{url}/health/ready").status_code == 200,
        within=DEADLINE,
        what="/health/ready to answer 200 again",
    )
    after = scrape(url)
    assert value(after, "sx_worker_connected") == 1
    # At least one: a stopping scheduler may still take a registration before it goes.
    assert value(after, "sx_worker_reconnects_total") >= reconnects + 1
    assert httpx.get(f"{url}/nothing").status_code == 404
