"""Metrics and JSON logs of real processes: ``sx-worker serve`` and a worker, both with
``--log-format json`` (SX_LOG_FORMAT for the scheduler), running jobs through the OpenAPI."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from sx.processors import InstanceStatus, JobSpec, Registry, TriggerType, use_registry
from sx.worker.openapi import OpenApiClient
from tests.e2e.conftest import GROUP, NAMESPACE, Cluster, Proc, clean_env, eventually, spawn, wait_final

pytestmark = pytest.mark.slow

# The definitions, kept out of the default registry other tests look at.
OPS = Registry()
with use_registry(OPS):
    from tests.e2e import ops_jobs  # noqa: F401


def spec(name: str) -> JobSpec:
    return OPS.get(name).spec


@pytest.fixture(scope="module")
def ops_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Cluster, Proc]]:
    """A scheduler logging JSON (by SX_LOG_FORMAT) and one worker logging JSON (by the flag)."""
    cluster = Cluster(tmp_path_factory.mktemp("ops"), targets=("tests.e2e.ops_jobs",))
    cluster.events.mkdir()
    try:
        cluster.start_scheduler(env={"SX_LOG_FORMAT": "json"})
        cluster.ensure_group()
        worker = spawn(
            "worker-json",
            [*cluster.worker_args(), "--log-format", "json"],
            folder=cluster.folder,
            env=clean_env(SX_DATA_DIR=str(cluster.folder / "worker-json"), SX_WORKER_ID="e2e-json"),
        )
        cluster.workers.append(worker)
        cluster.wait_registered(worker)
        yield cluster, worker
    finally:
        cluster.stop()


@pytest.fixture
async def api(ops_cluster: tuple[Cluster, Proc]) -> AsyncIterator[OpenApiClient]:
    async with OpenApiClient(ops_cluster[0].http_url, namespace=NAMESPACE, group_id=GROUP) as client:
        yield client


def samples(http_url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of ``/metrics``, by name and labels."""
    text = httpx.get(f"{http_url}/metrics").raise_for_status().text
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(found: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    return found.get((name, frozenset(labels.items())), 0.0)


def json_lines(proc: Proc) -> list[dict[str, Any]]:
    """The log lines that are JSON objects (banners printed for people are not logging)."""
    return [json.loads(line) for line in proc.output().splitlines() if line.startswith("{")]


async def test_counters_move_when_a_job_runs_through_a_worker(
    ops_cluster: tuple[Cluster, Proc], api: OpenApiClient
) -> None:
    cluster = ops_cluster[0]
    before = samples(cluster.http_url)
    assert value(before, "sx_scheduler_workers_connected", namespace=NAMESPACE, group=GROUP) == 1
    job_id = await cluster.job_id(api, spec("ops.log"))
    instance_id = await api.execute_job(job_id)
    detail = await wait_final(api, job_id, instance_id)
    assert detail.status is InstanceStatus.SUCCESS

    after = samples(cluster.http_url)
    api_trigger = TriggerType.API.name.lower()
    for name, labels in [
        ("sx_scheduler_instances_created_total", {"trigger_type": api_trigger}),
        ("sx_scheduler_instances_finished_total", {"status": "success", "trigger_type": api_trigger}),
        ("sx_scheduler_instance_start_delay_seconds_count", {}),
        ("sx_scheduler_openapi_requests_total", {"endpoint": "/openapi/v1/job/execute", "code": "200"}),
        ("sx_scheduler_openapi_request_seconds_count", {"endpoint": "/openapi/v1/job/execute"}),
        ("sx_scheduler_store_operation_seconds_count", {"operation": "write"}),
        ("sx_scheduler_store_operation_seconds_count", {"operation": "read"}),
    ]:
        assert value(after, name, **labels) > value(before, name, **labels), (name, labels)
    assert value(after, "sx_scheduler_dispatch_queue_depth") == 0
    # The endpoint label is the route's path, never a raw URL with its query string.
    assert all("?" not in dict(labels).get("endpoint", "") for _, labels in after)


async def test_fires_count_by_time_type(ops_cluster: tuple[Cluster, Proc], api: OpenApiClient) -> None:
    cluster = ops_cluster[0]
    start = value(samples(cluster.http_url), "sx_scheduler_fires_total", time_type="cron")
    job_id = await cluster.job_id(api, spec("ops.cron"))
    try:

        async def fired() -> bool:
            return value(samples(cluster.http_url), "sx_scheduler_fires_total", time_type="cron") > start

        await eventually(fired, what="a cron fire to be counted")
    finally:
        await api.disable_job(job_id)


async def test_json_lines_carry_the_ids(ops_cluster: tuple[Cluster, Proc], api: OpenApiClient) -> None:
    cluster, worker = ops_cluster
    job_id = await cluster.job_id(api, spec("ops.log"))
    instance_id = await api.execute_job(job_id)
    await wait_final(api, job_id, instance_id)

    def ours(message: str) -> list[dict[str, Any]]:
        return [
            line
            for line in json_lines(worker)
            if line.get("instance_id") == instance_id and message in line["message"]
        ]

    async def both_logged() -> bool:
        return bool(ours("through ctx.logger")) and bool(ours("through a module logger"))

    await eventually(both_logged, what="the processor's two lines in the worker's JSON log")
    for line in ours("through ctx.logger") + ours("through a module logger"):
        assert line["job_id"] == job_id
        assert line["task_id"] == 0 or isinstance(line["task_id"], int)
        assert line["level"] == "INFO"
        assert {"time", "logger", "message"} <= line.keys()
        assert not any(key.startswith("sx_") for key in line)
    assert ours("through a module logger")[0]["logger"] == "tests.e2e.ops_jobs"
    # Every line the scheduler logged is one JSON object (its one banner line is printed, not logged).
    scheduler = cluster.scheduler
    assert scheduler is not None
    logged = [line for line in scheduler.output().splitlines() if not line.startswith("scheduler: OpenAPI")]
    assert logged, "the scheduler logged nothing"
    parsed = [json.loads(line) for line in logged]
    assert all({"time", "level", "logger", "message"} <= line.keys() for line in parsed)


def test_health_endpoints(ops_cluster: tuple[Cluster, Proc]) -> None:
    url = ops_cluster[0].http_url
    for path in ("/health", "/health/live", "/health/ready"):
        response = httpx.get(url + path)
        assert response.status_code == 200, (path, response.text)
    assert httpx.get(url + "/health/ready").json()["data"] == {"status": "ready"}
