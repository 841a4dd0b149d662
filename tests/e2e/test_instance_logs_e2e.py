"""Online instance logs with real processes: ``sx-worker serve`` (keeping 50 lines per instance) and one
``sx-worker run tests.e2e.log_jobs`` (a 150-line log buffer). Lines logged through ``ctx.logger``, by
subtasks of a map job, by a shell script, and (with captureLogs) by plain logging and print are read
back through the client and ``sx-worker logs``, followed while the instance runs, capped with a
"truncated" line, and kept (the newest 150, with a "dropped" count) while the scheduler is down."""

from __future__ import annotations

import json
import subprocess
from collections.abc import AsyncIterator, Iterator

import pytest

from sx.processors import InstanceStatus, JobSpec, JobType, Registry, use_registry
from sx.worker.openapi import InstanceLog, InstanceLogLine, OpenApiClient, SyncOpenApiClient
from tests.e2e.conftest import (
    GROUP,
    NAMESPACE,
    Cluster,
    clean_env,
    eventually,
    spawn,
    sx_worker,
    wait_final,
    wait_status,
)
from tests.e2e.jobs import events

LOGS = Registry()
with use_registry(LOGS):
    from tests.e2e import log_jobs  # noqa: F401

MAX_LINES = 50
BUFFER_LINES = 150


def spec(name: str, **changes: object) -> JobSpec:
    return LOGS.get(name).spec.model_copy(update=changes)


@pytest.fixture(scope="module")
def log_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    cluster = Cluster(tmp_path_factory.mktemp("logs"), targets=("tests.e2e.log_jobs",))
    cluster.events.mkdir()
    try:
        cluster.start_scheduler(env={"SX_INSTANCE_LOG_LINES": str(MAX_LINES)})
        cluster.ensure_group()
        worker = spawn(
            "worker-logs",
            cluster.worker_args(),
            folder=cluster.folder,
            env=clean_env(
                E2E_EVENTS=str(cluster.events),
                SX_DATA_DIR=str(cluster.folder / "worker-logs"),
                SX_WORKER_ID="e2e-logs",
                SX_LOG_BUFFER_LINES=str(BUFFER_LINES),
            ),
        )
        cluster.workers.append(worker)
        cluster.wait_registered(worker)
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
async def api(log_cluster: Cluster) -> AsyncIterator[OpenApiClient]:
    async with OpenApiClient(log_cluster.http_url, namespace=NAMESPACE, group_id=GROUP, timeout=30) as client:
        yield client


async def run(cluster: Cluster, api: OpenApiClient, job: JobSpec) -> tuple[int, int]:
    job_id = await cluster.job_id(api, job)
    instance_id = await api.execute_job(job_id)
    detail = await wait_final(api, job_id, instance_id)
    assert detail.status is InstanceStatus.SUCCESS, detail.result
    return job_id, instance_id


async def complete_log(api: OpenApiClient, job_id: int, instance_id: int) -> list[InstanceLogLine]:
    """Every line, once the log is complete (lines arrive shortly after the instance ends)."""

    async def read() -> InstanceLog | None:
        log = await api.get_instance_log(job_id, instance_id, limit=1000)
        return log if log.complete else None

    return list((await eventually(read, what=f"the log of instance {instance_id} complete")).lines)


async def test_ctx_logger_lines_are_stored_in_order(log_cluster: Cluster, api: OpenApiClient) -> None:
    job_id, instance_id = await run(log_cluster, api, spec("logs.standalone"))
    lines = await complete_log(api, job_id, instance_id)
    assert [(line.level, line.message.splitlines()[0]) for line in lines] == [
        ("INFO", "hello world"),
        ("WARNING", "careful"),
        ("ERROR", "it failed"),
    ]
    assert "ValueError: bad value" in lines[2].message  # the traceback comes with the line
    assert [line.offset for line in lines] == [1, 2, 3]
    assert all(line.worker_id == "e2e-logs" and line.task_name == "" and line.time_ms > 0 for line in lines)
    only_errors = await api.get_instance_log(job_id, instance_id, level="ERROR")
    assert [line.offset for line in only_errors.lines] == [3]
    paged = await api.get_instance_log(job_id, instance_id, offset=1, limit=1)
    assert [line.message for line in paged.lines] == ["careful"] and paged.next_offset == 2


async def test_subtasks_of_a_map_job_carry_their_task(log_cluster: Cluster, api: OpenApiClient) -> None:
    job_id, instance_id = await run(log_cluster, api, spec("logs.map"))
    lines = await complete_log(api, job_id, instance_id)
    parts = sorted((line.message, line.task_name) for line in lines if line.task_name == "parts")
    assert parts == [("part a", "parts"), ("part b", "parts"), ("part c", "parts")]
    root = [line for line in lines if line.message == "mapping"]
    assert len(root) == 1 and root[0].task_id == 0 and root[0].task_name == "MAP_TASK_ROOT"
    one = next(line for line in lines if line.message == "part b")
    assert one.task_id > 0
    filtered = await api.get_instance_log(job_id, instance_id, task_id=one.task_id)
    assert [line.message for line in filtered.lines] == ["part b"]
    by_name = await api.get_instance_log(job_id, instance_id, task_name="parts")
    assert len(by_name.lines) == 3


async def test_a_script_jobs_output_is_shipped(log_cluster: Cluster, api: OpenApiClient) -> None:
    script = JobSpec(
        name="logs.script", job_type=JobType.SHELL, content='echo "to stdout"\necho "to stderr" >&2\n'
    )
    job_id, instance_id = await run(log_cluster, api, script)
    lines = await complete_log(api, job_id, instance_id)
    assert [line.message for line in lines] == ["to stdout", "to stderr"]


async def test_capture_logs_ships_plain_logging_and_print(log_cluster: Cluster, api: OpenApiClient) -> None:
    job_id, instance_id = await run(log_cluster, api, spec("logs.capture"))
    messages = [(line.level, line.message) for line in await complete_log(api, job_id, instance_id)]
    assert messages == [
        ("INFO", "through ctx.logger"),
        ("WARNING", "through a plain logger"),
        ("INFO", "through print"),
    ]
    assert (await api.get_job(job_id)).spec.capture_logs


async def test_an_instance_keeps_its_first_lines_and_a_truncated_line(
    log_cluster: Cluster, api: OpenApiClient
) -> None:
    job_id, instance_id = await run(log_cluster, api, spec("logs.many", parameters="120"))
    lines = await complete_log(api, job_id, instance_id)
    assert [line.message for line in lines[:MAX_LINES]] == [f"line {n}" for n in range(MAX_LINES)]
    assert len(lines) == MAX_LINES + 1
    assert lines[-1].level == "WARNING" and lines[-1].message.startswith("truncated: 70 lines dropped")


def test_follow_prints_lines_while_the_instance_runs(log_cluster: Cluster) -> None:
    with SyncOpenApiClient(log_cluster.http_url, namespace=NAMESPACE, group_id=GROUP) as api:
        job_id = api.create_job(spec("logs.ticks", parameters="10"))
        instance_id = api.execute_job(job_id)
    args = [sx_worker(), "logs", str(job_id), str(instance_id), "--server", log_cluster.http_url]
    args += ["--namespace", NAMESPACE, "--group", GROUP]
    with subprocess.Popen(
        [*args, "--follow", "--output", "json"], env=clean_env(), stdout=subprocess.PIPE, text=True
    ) as follow:
        assert follow.stdout is not None
        first = json.loads(follow.stdout.readline())  # while the instance waits at its gate
        (log_cluster.events / "ticks-gate").touch()
        printed = [first, *(json.loads(line) for line in follow.stdout)]  # until the log is complete
        assert follow.wait(timeout=60) == 0
    assert [line["message"] for line in printed] == [f"tick {n}" for n in range(10)]
    assert [line["offset"] for line in printed] == list(range(1, 11))
    text = subprocess.run(args, env=clean_env(), capture_output=True, text=True, timeout=60)
    assert text.returncode == 0, text.stderr
    shown = text.stdout.splitlines()
    assert len(shown) == 10 and " INFO " in shown[0] and "[e2e-logs]" in shown[0]
    assert shown[0].endswith("tick 0")
    missing = subprocess.run(
        [*args[:2], str(job_id), "999999", *args[4:]], env=clean_env(), capture_output=True
    )
    assert missing.returncode == 5, missing.stderr


async def test_a_worker_cut_off_keeps_its_newest_lines_and_counts_the_rest(
    log_cluster: Cluster, api: OpenApiClient
) -> None:
    job_id = await log_cluster.job_id(api, spec("logs.gated", parameters="400"))
    instance_id = await api.execute_job(job_id)
    await wait_status(api, job_id, instance_id, InstanceStatus.RUNNING)
    await eventually(
        lambda: _async(events(log_cluster.events, "logs.gated-waiting")), what="the job waiting at its gate"
    )
    assert log_cluster.stop_scheduler() == 0
    (log_cluster.events / "gate").touch()  # it logs 400 lines while no scheduler can take them
    await eventually(lambda: _async(events(log_cluster.events, "logs.gated")), what="the lines logged")
    log_cluster.start_scheduler(env={"SX_INSTANCE_LOG_LINES": str(MAX_LINES * 10)})
    await wait_final(api, job_id, instance_id)
    lines = await complete_log(api, job_id, instance_id)
    assert lines[0].level == "WARNING"
    assert lines[0].message.startswith(f"{400 - BUFFER_LINES} lines dropped")
    assert [line.message for line in lines[1:]] == [f"gated {n}" for n in range(400 - BUFFER_LINES, 400)]


async def _async(value: object) -> object:
    return value
