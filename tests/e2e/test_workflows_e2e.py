"""Workflows end to end: a real scheduler and worker, workflows created and driven through the OpenAPI."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sx.processors import (
    InstanceStatus,
    JobContext,
    Processor,
    ProcessResult,
    Registry,
    WorkflowRegistry,
    processor,
    workflow,
)
from sx.worker.openapi import (
    ConflictError,
    InvalidRequestError,
    NotFoundError,
    SyncOptions,
    WorkflowInstanceDetail,
    sync_definitions,
)
from sx.worker.testing import LocalScheduler
from tests.e2e.conftest import eventually

registry = Registry()
FLAKY = {"fail": True}


def _upstream(ctx: JobContext) -> dict[str, str]:
    return {item.job_name: item.data for item in ctx.getUpstreamData()}


@processor(name="wf.extract", registry=registry)
class Extract(Processor):
    def process(self, ctx: JobContext) -> str:
        params = ctx.instance_parameters
        shown = params if len(params) <= 50 else f"{len(params.encode())} bytes"
        return f"extract({shown}) wf={ctx.wf_instance_id > 0}"


@processor(name="wf.left", registry=registry)
class Left(Processor):
    def process(self, ctx: JobContext) -> str:
        return f"left<{_upstream(ctx)['wf.extract']}> params={ctx.instance_parameters!r}"


@processor(name="wf.right", registry=registry)
class Right(Processor):
    def process(self, ctx: JobContext) -> str:
        return f"right<{_upstream(ctx)['wf.extract']}>"


@processor(name="wf.join", registry=registry)
class Join(Processor):
    def process(self, ctx: JobContext) -> str:
        return json.dumps(_upstream(ctx), sort_keys=True)


@processor(name="wf.flaky", registry=registry)
class Flaky(Processor):
    def process(self, ctx: JobContext) -> ProcessResult:
        if FLAKY["fail"]:
            return ProcessResult.failure("flaky failed")
        return ProcessResult.success("flaky ok")


@processor(name="wf.wait", registry=registry)
class WaitForStop(Processor):
    async def process(self, ctx: JobContext) -> str:
        await asyncio.wait_for(ctx.wait_cancelled(), timeout=60)
        return "stopped"


ALL = (Extract, Left, Right, Join, Flaky, WaitForStop)


@pytest.fixture
async def sched(tmp_path: Path) -> AsyncIterator[LocalScheduler]:
    FLAKY["fail"] = True
    async with LocalScheduler(tmp_path, registry=registry) as local:
        for target in ALL:
            await local.job_id(target)
        yield local


async def wait_wf(sched: LocalScheduler, wf_instance_id: int) -> WorkflowInstanceDetail:
    async def finished() -> WorkflowInstanceDetail | None:
        detail = await sched.client.get_workflow_instance(wf_instance_id)
        return detail if detail.status.finished else None

    return await eventually(finished, what=f"workflow instance {wf_instance_id} to finish")


async def test_diamond_passes_parameters_to_roots_and_upstream_data_down(sched: LocalScheduler) -> None:
    wf_id = await sched.client.create_workflow(
        {
            "name": "diamond",
            "edges": [
                ["wf.extract", "wf.left"],
                ["wf.extract", "wf.right"],
                ["wf.left", "wf.join"],
                ["wf.right", "wf.join"],
            ],
        }
    )
    wf_instance_id = await sched.client.execute_workflow(wf_id, "p1")
    detail = await wait_wf(sched, wf_instance_id)
    assert detail.status is InstanceStatus.SUCCESS
    extract = detail.node("wf.extract")
    assert extract.result == "extract(p1) wf=True"
    # Only the root gets the workflow's instance parameters.
    assert detail.node("wf.left").result == "left<extract(p1) wf=True> params=''"
    assert json.loads(detail.node("wf.join").result) == {
        "wf.left": "left<extract(p1) wf=True> params=''",
        "wf.right": "right<extract(p1) wf=True>",
    }
    # Every node instance carries the workflow instance id, and ran once.
    for node in detail.nodes:
        assert node.status == int(InstanceStatus.SUCCESS)
        assert node.instance_id is not None
    join_job = await sched.job_id(Join)
    assert len(await sched.client.get_instance_list(join_job)) == 1
    listed = await sched.client.list_workflow_instances(wf_id)
    assert [item.wf_instance_id for item in listed.instances] == [wf_instance_id]


async def test_fan_out_runs_every_branch(sched: LocalScheduler) -> None:
    wf_id = await sched.client.create_workflow(
        {
            "name": "fan",
            "nodes": ["wf.extract"],
            "edges": [["wf.extract", "wf.left"], ["wf.extract", "wf.right"]],
        }
    )
    detail = await wait_wf(sched, await sched.client.execute_workflow(wf_id, "x"))
    assert detail.status is InstanceStatus.SUCCESS
    assert {node.name for node in detail.nodes} == {"wf.extract", "wf.left", "wf.right"}
    assert detail.node("wf.right").result == "right<extract(x) wf=True>"


async def test_failed_node_stops_downstream_and_rerun_continues(sched: LocalScheduler) -> None:
    wf_id = await sched.client.create_workflow(
        {"name": "flaky", "edges": [["wf.extract", "wf.flaky"], ["wf.flaky", "wf.join"]]}
    )
    wf_instance_id = await sched.client.execute_workflow(wf_id, "r")
    failed = await wait_wf(sched, wf_instance_id)
    assert failed.status is InstanceStatus.FAILED
    assert failed.node("wf.flaky").status == int(InstanceStatus.FAILED)
    assert "flaky failed" in failed.result
    assert failed.node("wf.join").status == 0 and failed.node("wf.join").instance_id is None

    flaky_id = failed.node("wf.flaky").job_id
    with pytest.raises(ConflictError):
        await sched.client.rerun_workflow_node(wf_instance_id, failed.node("wf.extract").job_id)
    FLAKY["fail"] = False
    new_instance = await sched.client.rerun_workflow_node(wf_instance_id, flaky_id)
    assert new_instance != failed.node("wf.flaky").instance_id
    done = await wait_wf(sched, wf_instance_id)
    assert done.status is InstanceStatus.SUCCESS
    assert done.node("wf.flaky").result == "flaky ok"
    assert json.loads(done.node("wf.join").result) == {"wf.flaky": "flaky ok"}
    # The root ran once: the re-run continued from the failed node.
    assert len(await sched.client.get_instance_list(done.node("wf.extract").job_id)) == 1


async def test_stop_kills_running_nodes(sched: LocalScheduler) -> None:
    wf_id = await sched.client.create_workflow({"name": "stoppable", "edges": [["wf.wait", "wf.join"]]})
    wf_instance_id = await sched.client.execute_workflow(wf_id)

    async def running() -> bool:
        detail = await sched.client.get_workflow_instance(wf_instance_id)
        return detail.node("wf.wait").status == int(InstanceStatus.RUNNING)

    await eventually(running, what="the wf.wait node to run")
    await sched.client.stop_workflow_instance(wf_instance_id)
    detail = await wait_wf(sched, wf_instance_id)
    assert detail.status is InstanceStatus.FAILED
    wait_job = detail.node("wf.wait").job_id

    async def killed() -> bool:
        instances = await sched.client.get_instance_list(wait_job)
        return all(item.status.finished for item in instances)

    await eventually(killed, what="the wf.wait node instance to end")
    final = await sched.client.get_workflow_instance(wf_instance_id)
    assert final.node("wf.join").instance_id is None


async def test_bad_graphs_are_refused_with_clear_messages(sched: LocalScheduler) -> None:
    with pytest.raises(InvalidRequestError, match="cycle"):
        await sched.client.create_workflow(
            {"name": "cycle", "edges": [["wf.extract", "wf.left"], ["wf.left", "wf.extract"]]}
        )
    with pytest.raises(InvalidRequestError, match="does not exist"):
        await sched.client.create_workflow({"name": "unknown", "edges": [["wf.extract", "wf.nothing"]]})
    with pytest.raises(InvalidRequestError, match="does not exist"):
        await sched.client.create_workflow({"name": "bad-id", "nodes": [999999]})
    # A job of another group.
    other = sched.client.__class__(sched.client.base_url, namespace=sched.namespace, group_id="other")
    async with other:
        await other.ensure_group()
        job = await sched.client.get_job(await sched.job_id(Extract))
        other_job = await other.create_job(job.spec)
    with pytest.raises(InvalidRequestError, match="belongs to group"):
        await sched.client.create_workflow({"name": "foreign", "nodes": [other_job]})


async def test_instance_parameters_limit(sched: LocalScheduler) -> None:
    wf_id = await sched.client.create_workflow({"name": "limit", "nodes": ["wf.extract"]})
    with pytest.raises(InvalidRequestError, match="1000 bytes"):
        await sched.client.execute_workflow(wf_id, "é" * 501)
    ok = await sched.client.execute_workflow(wf_id, "x" * 1000)
    detail = await wait_wf(sched, ok)
    assert detail.node("wf.extract").result == "extract(1000 bytes) wf=True"


async def test_disabled_workflow_is_not_triggered_by_time(sched: LocalScheduler) -> None:
    wf_id = await sched.client.create_workflow(
        {"name": "timed", "timeType": 3, "timeExpression": "1", "nodes": ["wf.extract"]}
    )

    async def fired() -> bool:
        return (await sched.client.list_workflow_instances(wf_id)).total >= 1

    await eventually(fired, what="the timed workflow to fire")
    await sched.client.disable_workflow(wf_id)
    info = await sched.client.get_workflow(wf_id)
    assert not info.enabled
    page = await sched.client.list_workflow_instances(wf_id)
    for item in page.instances:
        await wait_wf(sched, item.wf_instance_id)
    count = (await sched.client.list_workflow_instances(wf_id)).total
    # Well past one period: no further instance appears while disabled.
    await asyncio.sleep(2.5)
    assert (await sched.client.list_workflow_instances(wf_id)).total == count
    await sched.client.enable_workflow(wf_id)
    await eventually(lambda: _more(sched, wf_id, count), what="the enabled workflow to fire again")


async def _more(sched: LocalScheduler, wf_id: int, count: int) -> bool:
    return (await sched.client.list_workflow_instances(wf_id)).total > count


async def test_delete_stops_running_instances_first(sched: LocalScheduler) -> None:
    wf_id = await sched.client.create_workflow({"name": "doomed", "nodes": ["wf.wait"]})
    wf_instance_id = await sched.client.execute_workflow(wf_id)

    async def running() -> bool:
        detail = await sched.client.get_workflow_instance(wf_instance_id)
        return detail.node("wf.wait").status == int(InstanceStatus.RUNNING)

    await eventually(running, what="the wf.wait node to run")
    wait_job = await sched.job_id(WaitForStop)
    await sched.client.delete_workflow(wf_id)
    with pytest.raises(NotFoundError):
        await sched.client.get_workflow(wf_id)

    async def killed() -> bool:
        return all(item.status.finished for item in await sched.client.get_instance_list(wait_job))

    await eventually(killed, what="the wf.wait node instance to end")
    instances = await sched.client.get_instance_list(wait_job)
    assert instances[0].status is InstanceStatus.FAILED


async def test_code_defined_workflow_syncs_and_runs(sched: LocalScheduler) -> None:
    workflows = WorkflowRegistry()
    spec = workflow("coded", edges=[(Extract, Left), (Extract, Right)], registry=workflows)
    result = await sync_definitions(sched.client, [], SyncOptions(), workflows=workflows.all())
    assert result.ok, result.summary()
    info = await sched.client.find_workflow("coded")
    assert info is not None and info.managed and info.spec.diff(spec) == {}
    again = await sync_definitions(sched.client, [], SyncOptions(), workflows=workflows.all())
    assert [entry.action.value for entry in again.workflows] == ["unchanged"]
    detail = await wait_wf(sched, await sched.client.execute_workflow(info.workflow_id, "c"))
    assert detail.status is InstanceStatus.SUCCESS
