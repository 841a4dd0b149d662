"""End to end: a scheduler process, two worker processes, jobs over the OpenAPI (standalone, broadcast).

Order matters only for speed: the timed jobs are created once and observed by several tests, and the
tests that kill or stop a worker start a replacement (``cluster.ensure_workers``) for the next one.
"""

from __future__ import annotations

import itertools
import json
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from sx.cli import ExitCode
from sx.processors import InstanceStatus, TriggerType
from sx.worker import OpenApiClient, SyncOpenApiClient
from tests.e2e.conftest import (
    DEADLINE,
    GROUP,
    NAMESPACE,
    Cluster,
    clean_env,
    eventually,
    spawn,
    wait_final,
    wait_status,
)
from tests.e2e.jobs import SCRIPT, events

pytestmark = pytest.mark.slow

TIMED = ("e2e.cron2", "e2e.rate", "e2e.delay")


def instance_events(cluster: Cluster, job: str, instance_id: int) -> list[dict[str, Any]]:
    return [e for e in events(cluster.events, job) if e.get("instance") == instance_id]


async def started(cluster: Cluster, job: str, instance_id: int) -> dict[str, Any]:
    """Wait until the processor recorded that it runs ``instance_id``; that event."""

    async def check() -> dict[str, Any] | None:
        found = instance_events(cluster, job, instance_id)
        return found[0] if found else None

    return await eventually(check, what=f"{job} to start instance {instance_id}")


# -- parameters and the api time type ---------------------------------------------------------------


async def test_execute_job_passes_instance_and_job_parameters(
    cluster: Cluster, client: OpenApiClient
) -> None:
    job_id = await cluster.job_id(client, "e2e.echo")
    instance_id = await client.execute_job(job_id, "instance-params")
    detail = await wait_final(client, job_id, instance_id)
    assert detail.status is InstanceStatus.SUCCESS, detail
    result = json.loads(detail.result)
    assert result["job"] == "job-params"
    assert result["instance"] == "instance-params"
    assert result["attempt"] == 0
    assert result["pid"] in {w.pid for w in cluster.workers}
    assert detail.trigger_type == TriggerType.API
    assert detail.executor and detail.work_addr


# -- timed jobs -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def timed_jobs(cluster: Cluster) -> Iterator[dict[str, int]]:
    """The cron, fix_rate and second_delay jobs, created together so they are observed together.

    The api job ``e2e.idle`` is created with them; nothing may ever trigger it.
    """
    with SyncOpenApiClient(cluster.http_url, namespace=NAMESPACE, group_id=GROUP) as api:
        ids = {name: api.create_job(cluster.definition(name).spec) for name in (*TIMED, "e2e.idle")}
        yield ids
        for name in TIMED:
            api.disable_job(ids[name])


async def runs(cluster: Cluster, job: str, count: int, *, within: float = DEADLINE) -> list[dict[str, Any]]:
    """Wait until ``job`` recorded ``count`` runs; all its runs by schedule time."""

    async def check() -> list[dict[str, Any]] | None:
        found = events(cluster.events, job)
        return sorted(found, key=lambda e: e["schedule"]) if len(found) >= count else None

    return await eventually(check, within=within, what=f"{count} runs of {job}")


async def test_cron_job_fires_every_two_seconds(cluster: Cluster, timed_jobs: dict[str, int]) -> None:
    found = await runs(cluster, "e2e.cron2", 3)
    for before, after in itertools.pairwise(found):
        assert after["schedule"] - before["schedule"] == pytest.approx(2.0, abs=0.001)
        assert after["instance"] > before["instance"]
    for run in found:
        assert run["schedule"] % 2 == pytest.approx(0, abs=0.001)  # on even seconds
        # Never early, and running before the next fire was due.
        assert run["schedule"] <= run["t"] < run["schedule"] + 2


async def test_fixed_rate_job_fires_every_second(cluster: Cluster, timed_jobs: dict[str, int]) -> None:
    found = await runs(cluster, "e2e.rate", 3)
    for before, after in itertools.pairwise(found):
        assert after["schedule"] - before["schedule"] == pytest.approx(1.0, abs=0.001)
    for run in found:
        assert run["schedule"] <= run["t"] < run["schedule"] + 1


async def test_second_delay_job_starts_a_delay_after_the_previous_end(
    cluster: Cluster, timed_jobs: dict[str, int]
) -> None:
    found = await runs(cluster, "e2e.delay", 3)
    for before, after in itertools.pairwise(found):
        # The scheduler counts from the end the worker reported, which is after the hook's own end.
        assert after["start"] >= before["end"] + 1.0
        assert after["schedule"] >= before["end"] + 1.0 - 0.001  # the wire carries milliseconds
        # ... and does not wait for another interval on top.
        assert after["start"] < before["end"] + 3.0


async def test_api_job_never_fires_by_time(cluster: Cluster, timed_jobs: dict[str, int]) -> None:
    # Only meaningful once the timed jobs fired several times each: wait for that (it holds at once
    # when the tests above ran first).
    await runs(cluster, "e2e.cron2", 3)
    async with OpenApiClient(cluster.http_url, namespace=NAMESPACE, group_id=GROUP) as api:
        page = await api.list_instances(timed_jobs["e2e.idle"])
    assert page.total == 0
    assert events(cluster.events, "e2e.idle") == []


# -- broadcast --------------------------------------------------------------------------------------


async def test_broadcast_runs_once_per_worker_with_one_pre_and_post(
    cluster: Cluster, client: OpenApiClient
) -> None:
    workers = cluster.ensure_workers(2)
    job_id = await cluster.job_id(client, "e2e.broadcast")
    instance_id = await client.execute_job(job_id)
    detail = await wait_final(client, job_id, instance_id)
    assert detail.status is InstanceStatus.SUCCESS, detail
    result = json.loads(detail.result)
    assert result["shards"] == [0, 1] and result["num"] == 2
    pids = sorted(int(r.split("@")[1]) for r in result["results"])
    assert pids == sorted(w.pid for w in workers)
    assert len(instance_events(cluster, "e2e.broadcast.pre", instance_id)) == 1
    assert len(instance_events(cluster, "e2e.broadcast.post", instance_id)) == 1
    process = instance_events(cluster, "e2e.broadcast.process", instance_id)
    assert sorted(e["sharding"] for e in process) == [0, 1]


# -- kill -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("job", ["e2e.wait_async", "e2e.wait_blocking"])
async def test_stop_instance_kills_a_running_processor(
    cluster: Cluster, client: OpenApiClient, job: str
) -> None:
    cluster.ensure_workers(2)
    job_id = await cluster.job_id(client, job)
    instance_id = await client.execute_job(job_id)
    await started(cluster, job, instance_id)
    await wait_status(client, job_id, instance_id, InstanceStatus.RUNNING)
    await client.stop_instance(job_id, instance_id)
    detail = await wait_final(client, job_id, instance_id)
    assert detail.status is InstanceStatus.FAILED
    assert detail.result.startswith("killed"), detail.result


def gone(pid: int) -> bool:
    """True when ``pid`` no longer runs (a zombie waiting for its reaper counts as gone)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


async def test_stop_instance_kills_a_script_and_its_children(
    cluster: Cluster, client: OpenApiClient, tmp_path: Path
) -> None:
    cluster.ensure_workers(2)
    job_id = await cluster.job_id(client, SCRIPT)
    pid_file = tmp_path / "child.pid"
    instance_id = await client.execute_job(job_id, str(pid_file))

    async def child_pid() -> int | None:
        text = pid_file.read_text().strip() if pid_file.exists() else ""
        return int(text) if text else None

    pid = await eventually(child_pid, what="the script to write its child's pid")
    assert not gone(pid)
    await wait_status(client, job_id, instance_id, InstanceStatus.RUNNING)
    await client.stop_instance(job_id, instance_id)
    detail = await wait_final(client, job_id, instance_id)
    assert detail.status is InstanceStatus.FAILED
    assert detail.result.startswith("killed"), detail.result

    async def child_gone() -> bool:
        return gone(pid)

    await eventually(child_gone, what=f"the script's child {pid} to end")


# -- losing a worker, stopping a worker, restarting the scheduler -----------------------------------


async def test_instance_of_a_killed_worker_is_retried_on_the_other(
    cluster: Cluster, client: OpenApiClient
) -> None:
    cluster.ensure_workers(2)
    job_id = await cluster.job_id(client, "e2e.sleep")
    instance_id = await client.execute_job(job_id, "2")
    first = await started(cluster, "e2e.sleep", instance_id)
    victim = cluster.worker_by_pid(first["pid"])
    victim.signal(signal.SIGKILL)
    victim.wait(timeout=10)

    lost = await wait_final(client, job_id, instance_id)
    assert lost.status is InstanceStatus.FAILED

    async def retry() -> Any:
        page = await client.list_instances(job_id, page_size=100)
        return next(
            (
                i
                for i in page.instances
                if i.trigger_type == TriggerType.SYSTEM_RETRY and i.instance_id > instance_id
            ),
            None,
        )

    retried = await eventually(retry, what=f"a system retry of instance {instance_id}")
    detail = await wait_final(client, job_id, retried.instance_id)
    assert detail.status is InstanceStatus.SUCCESS, detail
    survivor = next(w for w in cluster.workers if w.alive())
    assert detail.result == f"slept attempt=1 pid={survivor.pid}"
    cluster.ensure_workers(2)


async def test_sigterm_lets_the_running_instance_finish_and_exits_0(
    cluster: Cluster, client: OpenApiClient
) -> None:
    cluster.ensure_workers(2)
    job_id = await cluster.job_id(client, "e2e.sleep")
    instance_id = await client.execute_job(job_id, "1.5")
    first = await started(cluster, "e2e.sleep", instance_id)
    worker = cluster.worker_by_pid(first["pid"])
    worker.signal(signal.SIGTERM)
    assert worker.wait(timeout=30) == 0, worker.tail()
    detail = await wait_final(client, job_id, instance_id)
    assert detail.status is InstanceStatus.SUCCESS, detail
    assert detail.result == f"slept attempt=0 pid={worker.pid}"
    assert "shutting down gracefully" in worker.output()
    cluster.ensure_workers(2)


async def test_a_second_signal_while_draining_exits_at_once_and_the_instance_is_retried(
    cluster: Cluster, client: OpenApiClient
) -> None:
    cluster.ensure_workers(2)
    job_id = await cluster.job_id(client, "e2e.block_once")
    instance_id = await client.execute_job(job_id, "60")
    first = await started(cluster, "e2e.block_once", instance_id)
    await wait_status(client, job_id, instance_id, InstanceStatus.RUNNING)
    worker = cluster.worker_by_pid(first["pid"])

    worker.signal(signal.SIGTERM)

    async def draining() -> bool:
        return "shutting down gracefully" in worker.output()

    await eventually(draining, what="the first signal to start the graceful shutdown")
    # The blocking job ignores the stop request and the grace period is 15 s: only a second signal
    # can end the worker now.
    assert worker.alive(), worker.tail()
    worker.signal(signal.SIGINT)
    assert worker.wait(timeout=30) == ExitCode.INTERRUPTED, worker.tail()
    assert "second signal: exiting now" in worker.output()

    # Nothing was reported: the scheduler finds the worker gone, fails the instance as a system
    # failure and retries it on the other worker (issue 4: "so the scheduler can retry them").
    lost = await wait_final(client, job_id, instance_id)
    assert lost.status is InstanceStatus.FAILED
    assert "lost" in lost.result, lost.result

    async def retry() -> Any:
        page = await client.list_instances(job_id, page_size=100)
        return next((i for i in page.instances if i.trigger_type == TriggerType.SYSTEM_RETRY), None)

    retried = await eventually(retry, what=f"a system retry of instance {instance_id}")
    detail = await wait_final(client, job_id, retried.instance_id)
    assert detail.status is InstanceStatus.SUCCESS, detail
    survivor = next(w for w in cluster.live_workers())
    assert detail.result == f"attempt=1 pid={survivor.pid}"
    cluster.ensure_workers(2)


async def test_a_job_deaf_to_its_stop_does_not_hold_the_worker_past_the_grace(
    cluster: Cluster, client: OpenApiClient
) -> None:
    # Only this worker (grace 1 s) serves the group, so the blocking job runs on it.
    for proc in cluster.live_workers():
        proc.stop()
    env = clean_env(
        E2E_EVENTS=str(cluster.events),
        SX_DATA_DIR=str(cluster.folder / "short-grace"),
        SX_WORKER_ID="e2e-short-grace",
        SX_SHUTDOWN_GRACE="1",
    )
    worker = spawn("short-grace", cluster.worker_args(), folder=cluster.folder, env=env)
    try:
        cluster.wait_registered(worker)
        job_id = await cluster.job_id(client, "e2e.block_once")
        instance_id = await client.execute_job(job_id, "60")
        await started(cluster, "e2e.block_once", instance_id)
        worker.signal(signal.SIGTERM)
        # The thread is still asleep in the job, yet the worker reports and leaves once the grace is up
        # (waited for generously, yet well short of the job's 60 s, which a worker held by it would take).
        assert worker.wait(timeout=40) == ExitCode.OK, worker.tail()
        assert "still running a blocking hook" in worker.output()
        ended = await wait_final(client, job_id, instance_id)
        assert ended.status is InstanceStatus.FAILED
        assert "worker shut down" in ended.result, ended.result
        # Its retry was not refused for good by the draining worker: it waits for a worker, and runs.
        cluster.ensure_workers(2)

        async def retried() -> Any:
            page = await client.list_instances(job_id, page_size=100)
            return next((i for i in page.instances if i.instance_id > instance_id), None)

        retry = await eventually(retried, what=f"a retry of instance {instance_id}")
        detail = await wait_final(client, job_id, retry.instance_id)
        assert detail.status is InstanceStatus.SUCCESS, detail
    finally:
        worker.stop()
        cluster.ensure_workers(2)


async def test_a_result_reported_while_the_scheduler_was_down_is_kept(
    cluster: Cluster, client: OpenApiClient
) -> None:
    cluster.ensure_workers(2)
    job_id = await cluster.job_id(client, "e2e.sleep")
    instance_id = await client.execute_job(job_id, "1")
    first = await started(cluster, "e2e.sleep", instance_id)
    worker = cluster.worker_by_pid(first["pid"])
    await wait_status(client, job_id, instance_id, InstanceStatus.RUNNING)
    assert cluster.stop_scheduler() == 0
    # Every live worker registers once more with the restarted scheduler: count the registrations now.
    registered = {proc: proc.output().count("registered with scheduler") for proc in cluster.live_workers()}

    async def finished_on_worker() -> bool:
        return f"instance {instance_id} of job {job_id} ended SUCCESS" in worker.output()

    await eventually(finished_on_worker, what="the instance to end while the scheduler is down")
    # Back on the same folder and ports; the default heartbeat timeout gives workers time to return.
    cluster.start_scheduler(heartbeat_timeout=10)
    cluster.wait_registered(worker, times=registered[worker] + 1)
    detail = await wait_final(client, job_id, instance_id)
    assert detail.status is InstanceStatus.SUCCESS, detail
    assert detail.result == f"slept attempt=0 pid={worker.pid}"
    # The next test needs the others back too.
    for other, times in registered.items():
        if other is not worker:
            cluster.wait_registered(other, times=times + 1)


# -- the CLI's exit codes ---------------------------------------------------------------------------


def test_a_wrong_app_key_exits_3_with_a_clear_message(cluster: Cluster) -> None:
    done = subprocess.run(
        cluster.worker_args(app_key="not-the-key"),
        cwd=Path(__file__).resolve().parents[2],
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 3, done.stderr
    assert "app key" in done.stderr and "wrong" in done.stderr
    assert "not-the-key" not in done.stderr  # the key itself is never printed
