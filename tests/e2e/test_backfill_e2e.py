"""Backfills with a real scheduler and worker processes: past fire times of a live cron job run beside
its live fires (which keep their own maxConcurrency and are never refused because of the backfill), a
scheduler restarted mid-backfill resumes it with every fire time run once, a backfill stops cleanly,
and ``sx-worker jobs backfill --dry-run`` / ``jobs backfills`` print the plan and the progress."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from sx.processors import CronExpression, InstanceStatus, Registry, definition_of, use_registry
from sx.worker.openapi import BackfillInfo, OpenApiClient
from tests.e2e.conftest import GROUP, NAMESPACE, Cluster, clean_env, eventually, sx_worker, wait_final
from tests.e2e.jobs import events

with use_registry(Registry()):  # not the default registry other tests look at
    from tests.e2e.rerun_jobs import EveryTwoSeconds, Step

DAILY_STEP = definition_of(Step).spec.updated(
    {"name": "e2e.rerun.daily", "timeType": 1, "timeExpression": "0 0 3 * * ?", "timeZone": "UTC"}
)
DAY = "%Y-%m-%d %H:%M:%S"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A scheduler and two workers serving tests.e2e.rerun_jobs."""
    instance = Cluster(tmp_path_factory.mktemp("backfill"), targets=("tests.e2e.rerun_jobs",))
    instance.events.mkdir()
    try:
        instance.start_scheduler()
        instance.ensure_group()
        instance.ensure_workers(2)
        yield instance
    finally:
        instance.stop()


def _cli(cluster: Cluster, *args: str) -> subprocess.CompletedProcess[str]:
    command = [sx_worker(), *args, "--openapi", cluster.http_url, "--namespace", NAMESPACE, "--group", GROUP]
    return subprocess.run(command, env=clean_env(), capture_output=True, text=True, timeout=60)


async def _finished(client: OpenApiClient, backfill_id: int) -> BackfillInfo:
    async def check() -> BackfillInfo | None:
        found = await client.get_backfill(backfill_id)
        return found if found.state == "finished" else None

    return await eventually(check, what=f"backfill {backfill_id} to finish")


async def test_a_backfill_runs_beside_the_live_fires(cluster: Cluster, client: OpenApiClient) -> None:
    job_id = await cluster.job_id(client, definition_of(EveryTwoSeconds).spec)  # live, every 2 s
    # Data times of the last 20 s (no dataOffset): even seconds, as the job's cron evaluator says.
    end = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=1)
    end -= timedelta(seconds=end.second % 2)  # an even second: both ends are fire times
    start = end - timedelta(seconds=20)
    expected = CronExpression("*/2 * * * * ?").fires_after(start - timedelta(seconds=1), UTC, 20)
    expected = [t for t in expected if t <= end]
    plan = await client.plan_backfill(job_id, start, end)
    assert plan.total == len(expected) == 11

    backfill = await client.backfill_job(job_id, start, end, concurrency=2)
    assert (backfill.state, backfill.total, backfill.concurrency) == ("running", 11, 2)
    done = await _finished(client, backfill.backfill_id)
    assert (done.done, done.failed, done.pending, done.running) == (11, 0, 0, 0)

    page = await client.list_instances(job_id, page_size=100)
    backfilled = [i for i in page.instances if i.trigger_type == 2]
    live = [i for i in page.instances if i.trigger_type == 1]
    ran = sorted(e["data"] for e in events(cluster.events, "e2e.rerun.every2s"))
    assert sorted({t.timestamp() for t in expected} - set(ran)) == []
    assert len(backfilled) == 11 and {i.status for i in backfilled} == {InstanceStatus.SUCCESS}
    # The live fires went on meanwhile, none of them refused for the backfill's instances.
    assert live and InstanceStatus.REJECTED not in {i.status for i in live}
    await client.disable_job(job_id)


async def test_a_restarted_scheduler_resumes_the_backfill(cluster: Cluster, client: OpenApiClient) -> None:
    job_id = await cluster.job_id(client, DAILY_STEP)
    start, end = datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 6, 23, tzinfo=UTC)
    backfill = await client.backfill_job(job_id, start, end, instance_parameters="sleep:0.3")
    assert backfill.total == 6

    async def two_done() -> bool:
        return (await client.get_backfill(backfill.backfill_id)).done >= 2

    await eventually(two_done, what="two fire times done")
    assert cluster.stop_scheduler() == 0
    cluster.start_scheduler()
    for worker in cluster.live_workers():
        cluster.wait_registered(worker, times=2)
    done = await _finished(client, backfill.backfill_id)
    assert (done.done, done.failed) == (6, 0)
    page = await client.list_instances(job_id, page_size=100)
    dates = sorted(i.data_date for i in page.instances if i.trigger_type == 2)
    assert len(dates) == len(set(dates)) == 6  # each fire time once, across the restart


async def test_a_stopped_backfill_starts_nothing_more(cluster: Cluster, client: OpenApiClient) -> None:
    job_id = await cluster.job_id(client, DAILY_STEP)
    backfill = await client.backfill_job(
        job_id,
        datetime(2026, 2, 1, tzinfo=UTC),
        datetime(2026, 2, 5, 23, tzinfo=UTC),
        instance_parameters="block",
    )

    async def one_running() -> list[int] | None:
        fires = await client.list_backfill_fires(backfill.backfill_id)
        running = [f.instance_id for f in fires.fires if f.state == "running" and f.instance_id]
        return running or None

    (instance_id,) = await eventually(one_running, what="the first fire time running")
    stopped = await client.stop_backfill(backfill.backfill_id)
    assert (stopped.state, stopped.running, stopped.pending) == ("stopped", 1, 4)
    await client.stop_instance(job_id, instance_id)
    assert (await wait_final(client, job_id, instance_id)).status is InstanceStatus.FAILED
    listed = await client.list_backfills(job_id=job_id)
    assert listed.backfills[0].backfill_id == backfill.backfill_id
    assert listed.backfills[0].state == "stopped" and listed.backfills[0].pending == 4


def test_the_cli_prints_the_plan_and_the_backfills(cluster: Cluster) -> None:
    march = ("--from", "2026-03-01 00:00:00", "--to", "2026-03-03 23:00:00")
    dry = _cli(cluster, "jobs", "backfill", "e2e.rerun.daily", *march, "--dry-run")
    assert dry.returncode == 0, dry
    lines = dry.stdout.splitlines()
    assert lines[-1] == "3 fire times, 0 skipped" and len(lines) == 4
    too_many = _cli(cluster, "jobs", "backfill", "e2e.rerun.daily", *march, "--max-fire-times", "2")
    assert too_many.returncode == 2 and "maxFireTimes" in too_many.stderr, too_many
    listed = _cli(cluster, "jobs", "backfills", "--job", "e2e.rerun.daily", "--output", "json")
    assert listed.returncode == 0, listed
    assert json.loads(listed.stdout)["total"] >= 1
    table = _cli(cluster, "jobs", "backfills")
    assert table.returncode == 0 and table.stdout.split()[:3] == ["ID", "JOB", "STATE"], table


async def test_a_workflow_backfill_runs_each_dag_for_its_fire(
    cluster: Cluster, client: OpenApiClient
) -> None:
    first = await cluster.job_id(client, definition_of(Step).spec.updated({"name": "e2e.bf.wf.a"}))
    second = await cluster.job_id(client, definition_of(Step).spec.updated({"name": "e2e.bf.wf.b"}))
    wf_id = await client.create_workflow(
        {"name": "e2e.bf.wf", "edges": [[first, second]], "timeType": 1, "timeExpression": "0 0 3 * * ?",
         "timeZone": "UTC"}
    )  # fmt: skip
    start, end = datetime(2026, 4, 1, tzinfo=UTC), datetime(2026, 4, 3, 23, tzinfo=UTC)
    plan = await client.plan_workflow_backfill(wf_id, start, end)
    assert [f.schedule_date for f in plan.fire_times] == [f"2026-04-0{d} 03:00:00" for d in (1, 2, 3)]
    backfill = await client.backfill_workflow(wf_id, start, end, concurrency=2, instance_parameters="ok")
    assert (backfill.workflow_id, backfill.job_id, backfill.total) == (wf_id, None, 3)
    done = await _finished(client, backfill.backfill_id)
    assert (done.done, done.failed) == (3, 0)
    instances = (await client.list_workflow_instances(wf_id)).instances
    assert sorted(i.schedule_date for i in instances) == [f.schedule_date for f in plan.fire_times]
    for listed in instances:
        detail = await client.get_workflow_instance(listed.wf_instance_id)
        assert (detail.trigger_type, detail.status) == (2, InstanceStatus.SUCCESS)
        for node in detail.nodes:
            assert node.instance_id is not None
            ran = await client.get_instance(node.job_id, node.instance_id)
            assert (ran.trigger_type, ran.data_date) == (2, detail.schedule_date)
    dry = _cli(cluster, "workflows", "backfill", "e2e.bf.wf", "--from", "2026-04-01 00:00:00", "--to",
               "2026-04-02 23:00:00", "--dry-run", "--skip-successful")  # fmt: skip
    assert dry.returncode == 0, dry
    assert dry.stdout.splitlines()[-1] == "2 fire times, 2 skipped"  # both succeeded above
