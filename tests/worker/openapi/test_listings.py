"""The client's listings of a group's workers and alarm history, against a real scheduler: alarms raised
by the scheduler itself (a failEnable job's instance stopped before any worker took it), read back
through the async client and its blocking twin. Real connected workers are listed in
tests/e2e/test_listings_e2e.py."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from sx.processors import JobSpec, JobType, MonitorOptions, api
from sx.worker.openapi import (
    AlarmPage,
    InvalidRequestError,
    NotFoundError,
    OpenApiClient,
    SyncOpenApiClient,
    WorkerPage,
)
from tests.worker.openapi.test_client import GROUP, NS, client_for, live_scheduler

DEADLINE = 60.0


@pytest.fixture
async def url(tmp_path: Path) -> AsyncIterator[str]:
    async with live_scheduler(tmp_path) as base_url, client_for(base_url) as client:
        await client.ensure_group()
        yield base_url


@pytest.fixture
async def client(url: str) -> AsyncIterator[OpenApiClient]:
    async with client_for(url) as opened:
        yield opened


def alarmed_spec(name: str, channel: str) -> JobSpec:
    """An API-triggered job that alarms on failure through ``channel``; no worker serves it."""
    return JobSpec(
        name=name,
        job_type=JobType.PYTHON,
        class_name="app.jobs:Unserved",
        schedule=api(),
        monitor=MonitorOptions(fail_enable=True, send_channel=channel),
    )


async def raise_alarm(client: OpenApiClient, job_id: int) -> int:
    """Execute the job and stop the instance (no worker has it, so it fails at once and the scheduler
    alarms); returns the instance id once its alarm is in the history."""
    instance_id = await client.execute_job(job_id)
    await client.stop_instance(job_id, instance_id)
    deadline = time.monotonic() + DEADLINE
    while True:
        page = await client.list_alarms(job_id=job_id)
        if any(a.instance_id == instance_id for a in page.alarms):
            return instance_id
        assert time.monotonic() < deadline, f"no alarm for instance {instance_id} within {DEADLINE}s"
        await asyncio.sleep(0.02)


async def test_alarms_raised_by_the_scheduler_are_listed_with_their_outcome(client: OpenApiClient) -> None:
    logged = await client.create_job(alarmed_spec("logged", "log"))
    lost = await client.create_job(alarmed_spec("lost", "pager"))
    first = await raise_alarm(client, logged)
    second = await raise_alarm(client, lost)

    page = await client.list_alarms()
    assert isinstance(page, AlarmPage) and (page.total, page.page_num, page.page_size) == (2, 1, 20)
    newest, oldest = page.alarms
    assert (newest.job_id, newest.instance_id, newest.kind, newest.channel) == (
        lost,
        second,
        "failure",
        "pager",
    )
    assert not newest.delivered and "no alarm channel named 'pager'" in newest.error
    assert (oldest.job_id, oldest.instance_id, oldest.channel, oldest.delivered, oldest.error) == (
        logged, first, "log", True, "",
    )  # fmt: skip
    assert f"instance {first} failed" in oldest.message and oldest.time

    assert [a.instance_id for a in (await client.list_alarms(delivered=False)).alarms] == [second]
    assert [a.instance_id for a in (await client.list_alarms(delivered=True)).alarms] == [first]
    assert [a.instance_id for a in (await client.list_alarms(job_id=logged)).alarms] == [first]
    now = datetime.now(UTC)
    assert (
        await client.list_alarms(start_time=now - timedelta(hours=1), end_time=now + timedelta(hours=1))
    ).total == 2
    assert (await client.list_alarms(end_time=now - timedelta(hours=1))).total == 0
    assert (
        await client.list_alarms(start_time="2000-01-01 00:00:00", end_time="2000-12-31 00:00:00")
    ).total == 0
    second_page = await client.list_alarms(page_num=2, page_size=1)
    assert [a.instance_id for a in second_page.alarms] == [first] and second_page.total == 2

    with pytest.raises(InvalidRequestError, match="pageSize"):
        await client.list_alarms(page_size=0)
    with pytest.raises(InvalidRequestError, match="endTime"):
        await client.list_alarms(start_time="2030-01-02 00:00:00", end_time="2030-01-01 00:00:00")
    with pytest.raises(ValueError, match="timezone-aware"):
        await client.list_alarms(start_time=datetime(2030, 1, 1))


async def test_workers_of_a_group_without_any(client: OpenApiClient, url: str) -> None:
    page = await client.list_workers()
    assert isinstance(page, WorkerPage)
    assert (page.total, page.page_num, page.page_size, page.workers) == (0, 1, 100, ())
    with pytest.raises(InvalidRequestError, match="pageSize"):
        await client.list_workers(page_size=101)
    async with client_for(url, group_id="no-such-group") as other:
        with pytest.raises(NotFoundError, match="groupId"):
            await other.list_workers()
        with pytest.raises(NotFoundError, match="groupId"):
            await other.list_alarms()


async def test_the_blocking_twin_lists_too(url: str) -> None:
    def use() -> tuple[int, AlarmPage, WorkerPage]:
        with SyncOpenApiClient(url, namespace=NS, group_id=GROUP) as blocking:
            job_id = blocking.create_job(alarmed_spec("blocking", "log"))
            instance_id = blocking.run(raise_alarm(blocking.client, job_id))
            return instance_id, blocking.list_alarms(job_id=job_id, delivered=True), blocking.list_workers()

    # The scheduler runs on this loop, so the blocking calls go from another thread.
    instance_id, alarms, workers = await asyncio.to_thread(use)
    assert [a.instance_id for a in alarms.alarms] == [instance_id] and workers.total == 0
