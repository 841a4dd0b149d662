"""Workflows across real processes: ``sx-worker serve`` and two ``sx-worker run tests.e2e.jobs`` workers.

Every node's result ends with ``@<pid>`` of the process that ran it (see ``tests.e2e.jobs``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable

import pytest

from sx.processors import InstanceStatus
from sx.worker.openapi import OpenApiClient, WorkflowInstanceDetail
from tests.e2e.conftest import Cluster, eventually
from tests.e2e.jobs import FLAKY_FLAG, events

pytestmark = pytest.mark.slow

EXTRACT, LEFT, RIGHT, JOIN, FLAKY = (f"e2e.wf.{n}" for n in ("extract", "left", "right", "join", "flaky"))


async def create_workflow(
    cluster: Cluster, client: OpenApiClient, name: str, edges: Iterable[tuple[str, str]]
) -> int:
    edges = list(edges)
    for job in {job for edge in edges for job in edge}:
        await cluster.job_id(client, job)
    return await client.create_workflow({"name": name, "edges": [list(edge) for edge in edges]})


async def wait_workflow(client: OpenApiClient, wf_instance_id: int) -> WorkflowInstanceDetail:
    async def finished() -> WorkflowInstanceDetail | None:
        detail = await client.get_workflow_instance(wf_instance_id)
        return detail if detail.status.finished else None

    return await eventually(finished, what=f"workflow instance {wf_instance_id} to finish")


def pid_of(result: str) -> int:
    return int(result.rsplit("@", 1)[1])


async def test_diamond_runs_across_both_worker_processes_with_upstream_data(
    cluster: Cluster, client: OpenApiClient
) -> None:
    workers = cluster.ensure_workers(2)
    wf_id = await create_workflow(
        cluster, client, "diamond", [(EXTRACT, LEFT), (EXTRACT, RIGHT), (LEFT, JOIN), (RIGHT, JOIN)]
    )
    wf_instance_id = await client.execute_workflow(wf_id, "p1")
    detail = await wait_workflow(client, wf_instance_id)
    assert detail.status is InstanceStatus.SUCCESS, detail

    extract = detail.node(EXTRACT).result
    assert extract.startswith("extract(p1)@")
    left, right = detail.node(LEFT).result, detail.node(RIGHT).result
    assert left.startswith(f"left<{extract}>@") and right.startswith(f"right<{extract}>@")
    joined = json.loads(detail.node(JOIN).result)
    assert joined["upstream"] == {LEFT: left, RIGHT: right}

    # Round robin over the two live workers: the four nodes ran in both processes.
    pids = {pid_of(extract), pid_of(left), pid_of(right), joined["pid"]}
    assert pids == {w.pid for w in workers}
    for node in detail.nodes:
        assert node.status == int(InstanceStatus.SUCCESS) and node.instance_id is not None


async def test_a_node_failing_after_its_retries_fails_the_workflow_and_a_rerun_completes_it(
    cluster: Cluster, client: OpenApiClient
) -> None:
    cluster.ensure_workers(2)
    flag = cluster.events / FLAKY_FLAG
    flag.touch()
    wf_id = await create_workflow(
        cluster, client, "flaky-diamond", [(EXTRACT, LEFT), (EXTRACT, FLAKY), (LEFT, JOIN), (FLAKY, JOIN)]
    )
    wf_instance_id = await client.execute_workflow(wf_id, "r")
    failed = await wait_workflow(client, wf_instance_id)
    assert failed.status is InstanceStatus.FAILED, failed

    # The node used its own retry (max_attempt=1) before the workflow failed.
    runs = [e for e in events(cluster.events, FLAKY) if e["wf"] == wf_instance_id]
    assert sorted(e["attempt"] for e in runs) == [0, 1]
    flaky = failed.node(FLAKY)
    assert flaky.status == int(InstanceStatus.FAILED)
    assert flaky.result == "flaky failed on attempt 1"
    assert flaky.instance_id == max(e["instance"] for e in runs)  # the node's instance is the retry
    assert "flaky failed on attempt 1" in failed.result
    # Downstream of the failure never ran.
    assert failed.node(JOIN).status == 0 and failed.node(JOIN).instance_id is None

    # The other branch may still be finishing; the re-run needs it done to reach the join.
    async def left_done() -> bool:
        node = (await client.get_workflow_instance(wf_instance_id)).node(LEFT)
        return node.status == int(InstanceStatus.SUCCESS)

    await eventually(left_done, what="the left branch to succeed")
    flag.unlink()
    rerun = await client.rerun_workflow_node(wf_instance_id, flaky.job_id)
    assert rerun != flaky.instance_id
    done = await wait_workflow(client, wf_instance_id)
    assert done.status is InstanceStatus.SUCCESS, done

    extract = done.node(EXTRACT).result
    assert done.node(FLAKY).result.startswith(f"flaky<{extract}>@")
    joined = json.loads(done.node(JOIN).result)
    assert joined["upstream"] == {LEFT: done.node(LEFT).result, FLAKY: done.node(FLAKY).result}
    # The workflow went on from the failed node: the root and the other branch ran once in it (the
    # jobs are shared with the test above, whose instances are older than this workflow's root).
    first = done.node(EXTRACT).instance_id
    assert first is not None
    for name in (EXTRACT, LEFT):
        instances = await client.get_instance_list(done.node(name).job_id)
        assert [i.instance_id for i in instances if i.instance_id >= first] == [done.node(name).instance_id]
