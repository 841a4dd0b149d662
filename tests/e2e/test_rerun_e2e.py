"""Re-running instances with a real scheduler and worker process (``sx-worker serve`` and ``sx-worker run
tests.e2e.rerun_jobs``): a failed, a killed and a successful standalone instance, grid and parallel map
instances run whole again, and the refusal while the job is at its maxConcurrency (through the client
and ``sx-worker instances rerun``)."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator

import pytest

from sx.processors import InstanceStatus, Registry, definition_of, use_registry
from sx.worker.openapi import ConflictError, OpenApiClient, WorkflowInstanceDetail
from tests.e2e.conftest import (
    GROUP,
    NAMESPACE,
    Cluster,
    clean_env,
    eventually,
    sx_worker,
    wait_final,
    wait_status,
)
from tests.e2e.jobs import events

with use_registry(Registry()):  # not the default registry other tests look at
    from tests.e2e.rerun_jobs import FanOutOnce, Step


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A scheduler and one worker serving tests.e2e.rerun_jobs."""
    instance = Cluster(tmp_path_factory.mktemp("rerun"), targets=("tests.e2e.rerun_jobs",))
    instance.events.mkdir()
    try:
        instance.start_scheduler()
        instance.ensure_group()
        instance.ensure_workers(1)
        yield instance
    finally:
        instance.stop()


def _cli(cluster: Cluster, *args: str) -> subprocess.CompletedProcess[str]:
    command = [sx_worker(), *args, "--openapi", cluster.http_url, "--namespace", NAMESPACE, "--group", GROUP]
    return subprocess.run(command, env=clean_env(), capture_output=True, text=True, timeout=60)


async def test_failed_killed_and_successful_instances_run_again(
    cluster: Cluster, client: OpenApiClient
) -> None:
    job_id = await cluster.job_id(client, definition_of(Step).spec)

    failed_id = await client.execute_job(job_id, "fail")
    failed = await wait_final(client, job_id, failed_id)
    assert failed.status is InstanceStatus.FAILED and "asked to fail" in failed.result
    again_id = await client.rerun_instance(job_id, failed_id)
    again = await wait_final(client, job_id, again_id)
    assert (again.status, again.trigger_type, again.rerun_of) == (InstanceStatus.FAILED, 4, failed_id)
    assert (again.schedule_date, again.data_date) == (failed.schedule_date, failed.data_date)
    assert await client.get_instance(job_id, failed_id) == failed  # the original is as it was

    ok_id = await client.execute_job(job_id, "ok")
    ok = await wait_final(client, job_id, ok_id)
    assert ok.status is InstanceStatus.SUCCESS and ok.trigger_type == 3

    # At maxConcurrency 1 a running instance refuses a re-run, through the client and the CLI.
    blocked_id = await client.execute_job(job_id, "block")
    await wait_status(client, job_id, blocked_id, InstanceStatus.RUNNING)
    with pytest.raises(ConflictError, match="maxConcurrency is 1"):
        await client.rerun_instance(job_id, ok_id)
    refused = _cli(cluster, "instances", "rerun", str(job_id), str(ok_id))
    assert refused.returncode == 1 and "maxConcurrency is 1" in refused.stderr, refused
    with pytest.raises(ConflictError, match="unfinished"):
        await client.rerun_instance(job_id, blocked_id)

    await client.stop_instance(job_id, blocked_id)
    killed = await wait_final(client, job_id, blocked_id)
    assert killed.status is InstanceStatus.FAILED
    rerun_killed = await client.rerun_instance(job_id, blocked_id)
    await wait_status(client, job_id, rerun_killed, InstanceStatus.RUNNING)  # blocks again, as asked
    await client.stop_instance(job_id, rerun_killed)
    assert (await wait_final(client, job_id, rerun_killed)).rerun_of == blocked_id

    done = _cli(cluster, "instances", "rerun", "e2e.rerun.step", str(ok_id), "--output", "json")  # by name
    assert done.returncode == 0, done
    rerun_ok = json.loads(done.stdout)
    assert rerun_ok["rerunOf"] == ok_id
    detail = await wait_final(client, job_id, rerun_ok["instanceId"])
    assert (detail.status, detail.trigger_type, detail.data_date) == (InstanceStatus.SUCCESS, 4, ok.data_date)
    runs = [e for e in events(cluster.events, "e2e.rerun.step") if e["params"] == "ok"]
    assert [e["instance"] for e in runs] == [ok_id, rerun_ok["instanceId"]]
    assert runs[0]["data"] == runs[1]["data"]  # the same data time


@pytest.mark.parametrize("mode", ["grid", "parallel"])
async def test_a_map_instance_runs_whole_again(cluster: Cluster, client: OpenApiClient, mode: str) -> None:
    spec = definition_of(FanOutOnce).spec.updated({"name": f"e2e.rerun.map.{mode}", "executeMode": mode})
    job_id = await cluster.job_id(client, spec)
    first_id = await client.execute_job(job_id, "fail-once")
    assert (await wait_final(client, job_id, first_id)).status is InstanceStatus.FAILED
    rerun_id = await client.rerun_instance(job_id, first_id)
    rerun = await wait_final(client, job_id, rerun_id)
    assert (rerun.status, rerun.result, rerun.rerun_of) == (InstanceStatus.SUCCESS, "1,2,3,4,5", first_id)

    async def items_of_rerun() -> list[int] | None:
        items = sorted(
            e["item"] for e in events(cluster.events, "e2e.rerun.map") if e["instance"] == rerun_id
        )
        return items if len(items) >= 5 else None

    # Every subtask ran again, the ones that had succeeded too (a re-run is not a retry).
    assert await eventually(items_of_rerun, what="the re-run's subtasks") == [1, 2, 3, 4, 5]


async def test_a_workflow_instance_runs_whole_again_for_its_data_time(
    cluster: Cluster, client: OpenApiClient
) -> None:
    first = await cluster.job_id(client, definition_of(Step).spec.updated({"name": "e2e.rerun.wf.a"}))
    second = await cluster.job_id(client, definition_of(Step).spec.updated({"name": "e2e.rerun.wf.b"}))
    wf_id = await client.create_workflow({"name": "e2e.rerun.wf", "edges": [[first, second]]})
    original_id = await client.execute_workflow(wf_id, "ok")

    async def final(wf_instance_id: int) -> WorkflowInstanceDetail | None:
        detail = await client.get_workflow_instance(wf_instance_id)
        return detail if detail.status.finished else None

    original = await eventually(lambda: final(original_id), what="the workflow instance to end")
    assert original.status is InstanceStatus.SUCCESS

    ended = time.monotonic()

    async def a_second_later() -> bool:  # so a node started now has another date than the original's
        return time.monotonic() > ended + 1.0

    await eventually(a_second_later, what="a second to pass")
    rerun_id = await client.rerun_workflow_instance(original_id)
    rerun = await eventually(lambda: final(rerun_id), what="the re-run to end")
    assert (rerun.status, rerun.trigger_type, rerun.schedule_date) == (
        InstanceStatus.SUCCESS, 4, original.schedule_date
    )  # fmt: skip
    assert rerun.instance_parameters == "ok" and {n.job_id for n in rerun.nodes} == {first, second}
    for node in rerun.nodes:
        assert node.instance_id is not None
        detail = await client.get_instance(node.job_id, node.instance_id)
        assert detail.data_date == original.schedule_date != detail.schedule_date
    blocked = await client.execute_workflow(wf_id, "block")
    with pytest.raises(ConflictError, match="wfInstanceId"):
        await client.rerun_workflow_instance(blocked)
    await client.stop_workflow_instance(blocked)
