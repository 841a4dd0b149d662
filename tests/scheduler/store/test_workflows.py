"""The store contract for workflows, on SQLite and PostgreSQL (the `store` fixture)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from sx.processors import InstanceStatus, JobSpec, TimeType, TriggerType, api, fixed_rate
from sx.scheduler.store import (
    DuplicateError,
    Job,
    NewInstance,
    NewWorkflowInstance,
    NotFoundError,
    WorkflowDef,
    WorkflowFire,
)
from sx.scheduler.store.sql import SqlStore

T0 = datetime(2030, 1, 1, tzinfo=UTC)


async def add_job(store: SqlStore, name: str) -> Job:
    return await store.create_job(
        namespace="ns",
        group_id="g",
        spec=JobSpec(name=name, class_name="demo:Proc"),
        enabled=True,
        managed=False,
        next_fire_time=None,
    )


def node_instance(job: Job, wf_instance_id: int, upstream: tuple[tuple[str, str], ...] = ()) -> NewInstance:
    return NewInstance(
        job_id=job.id,
        namespace="ns",
        group_id="g",
        status=InstanceStatus.WAITING,
        trigger_type=TriggerType.API,
        time_type=TimeType.API,
        schedule_time=T0,
        data_time=T0,
        wf_instance_id=wf_instance_id,
        upstream_data=upstream,
    )


async def test_workflow_crud(store: SqlStore) -> None:
    a, b = await add_job(store, "a"), await add_job(store, "b")
    definition = WorkflowDef(name="w", schedule=fixed_rate(60), nodes=(a.id, b.id), edges=((a.id, b.id),))
    created = await store.create_workflow(
        namespace="ns", group_id="g", definition=definition, enabled=True, managed=True, next_fire_time=T0
    )
    assert await store.get_workflow(created.id) == created
    assert await store.find_workflow("ns", "g", "w") == created
    assert await store.find_workflow("ns", "other", "w") is None
    with pytest.raises(DuplicateError):
        await store.create_workflow(
            namespace="ns",
            group_id="g",
            definition=definition,
            enabled=True,
            managed=False,
            next_fire_time=None,
        )
    renamed = WorkflowDef(name="w2", schedule=api(), nodes=(b.id,), description="d")
    updated = await store.update_workflow(
        created.id, definition=renamed, enabled=False, clear_next_fire_time=True
    )
    assert updated.definition == renamed and not updated.enabled and updated.next_fire_time is None
    page = await store.list_workflows("ns", "g")
    assert page.total == 1 and page.items[0].name == "w2"
    with pytest.raises(NotFoundError):
        await store.update_workflow(999_999, enabled=True)
    assert await store.delete_workflow(created.id)
    assert not await store.delete_workflow(created.id)
    assert await store.get_workflow(created.id) is None


async def test_workflow_due_and_claim_once(store: SqlStore) -> None:
    a = await add_job(store, "a")
    definition = WorkflowDef(name="w", schedule=fixed_rate(60), nodes=(a.id,))
    wf = await store.create_workflow(
        namespace="ns", group_id="g", definition=definition, enabled=True, managed=False, next_fire_time=T0
    )
    await store.create_workflow(
        namespace="ns",
        group_id="g",
        definition=WorkflowDef(name="off", schedule=fixed_rate(60), nodes=(a.id,)),
        enabled=False,
        managed=False,
        next_fire_time=T0 - timedelta(hours=1),
    )
    assert await store.next_workflow_due_time() == T0
    assert [w.id for w in await store.due_workflows(T0, 10)] == [wf.id]
    assert await store.due_workflows(T0 - timedelta(seconds=1), 10) == []
    new = NewWorkflowInstance(
        workflow_id=wf.id,
        namespace="ns",
        group_id="g",
        status=InstanceStatus.WAITING,
        trigger_type=TriggerType.SCHEDULED,
        schedule_time=T0,
        nodes=(a.id,),
    )
    fire = WorkflowFire(workflow_id=wf.id, due=T0, next_fire_time=T0 + timedelta(minutes=1), instance=new)
    results = await asyncio.gather(store.claim_workflow_fire(fire), store.claim_workflow_fire(fire))
    made = [r for r in results if r is not None]
    assert len(made) == 1 and made[0].nodes == (a.id,)
    assert (await store.list_workflow_instances(wf.id)).total == 1
    assert await store.next_workflow_due_time() == T0 + timedelta(minutes=1)


async def test_workflow_instances_and_nodes(store: SqlStore) -> None:
    a, b = await add_job(store, "a"), await add_job(store, "b")
    wf = await store.create_workflow(
        namespace="ns",
        group_id="g",
        definition=WorkflowDef(name="w", schedule=api(), nodes=(a.id, b.id), edges=((a.id, b.id),)),
        enabled=True,
        managed=False,
        next_fire_time=None,
    )
    wfi = await store.create_workflow_instance(
        NewWorkflowInstance(
            workflow_id=wf.id,
            namespace="ns",
            group_id="g",
            status=InstanceStatus.WAITING,
            trigger_type=TriggerType.API,
            schedule_time=T0,
            nodes=(a.id, b.id),
            edges=((a.id, b.id),),
            instance_parameters="p",
        )
    )
    assert await store.get_workflow_instance(wfi.id) == wfi
    # A node starts once, however many callers race to start it.
    starts = await asyncio.gather(
        *(store.start_workflow_node(wfi.id, a.id, node_instance(a, wfi.id)) for _ in range(3))
    )
    started = [s for s in starts if s is not None]
    assert len(started) == 1
    first = started[0]
    assert first.wf_instance_id == wfi.id
    # A re-run needs a FAILED node.
    assert await store.start_workflow_node(wfi.id, a.id, node_instance(a, wfi.id), rerun=True) is None
    node = await store.update_workflow_node(
        wfi.id, a.id, only_if_instance=first.id, status=InstanceStatus.FAILED, result="boom"
    )
    assert node is not None and node.status is InstanceStatus.FAILED and node.result == "boom"
    # A stale instance id changes nothing.
    assert (
        await store.update_workflow_node(wfi.id, a.id, only_if_instance=first.id + 1000, result="x") is None
    )
    again = await store.start_workflow_node(wfi.id, a.id, node_instance(a, wfi.id), rerun=True)
    assert again is not None and again.id != first.id
    nodes = await store.list_workflow_nodes(wfi.id)
    assert [(n.job_id, n.instance_id, n.status) for n in nodes] == [(a.id, again.id, InstanceStatus.WAITING)]
    # Upstream data travels with the instance.
    down = await store.start_workflow_node(wfi.id, b.id, node_instance(b, wfi.id, (("a", "ok"),)))
    assert down is not None
    stored = await store.get_instance(down.id)
    assert stored is not None and stored.upstream_data == (("a", "ok"),)
    done = await store.update_workflow_instance(
        wfi.id, status=InstanceStatus.SUCCESS, end_time=T0, only_if_status=[InstanceStatus.WAITING]
    )
    assert done is not None and done.status is InstanceStatus.SUCCESS and done.end_time == T0
    assert (
        await store.update_workflow_instance(
            wfi.id, status=InstanceStatus.FAILED, only_if_status=[InstanceStatus.WAITING]
        )
        is None
    )
    page = await store.list_workflow_instances(wf.id, statuses=[InstanceStatus.SUCCESS])
    assert [i.id for i in page.items] == [wfi.id]
    assert await store.delete_workflow(wf.id)
    assert await store.get_workflow_instance(wfi.id) is None
    assert await store.list_workflow_nodes(wfi.id) == []


async def test_active_workflow_instance_ids_span_workflows(store: SqlStore) -> None:
    a = await add_job(store, "a")
    ids: list[int] = []
    for name in ("w1", "w2"):
        wf = await store.create_workflow(
            namespace="ns",
            group_id="g",
            definition=WorkflowDef(name=name, schedule=api(), nodes=(a.id,)),
            enabled=True,
            managed=False,
            next_fire_time=None,
        )
        for _ in range(2):
            made = await store.create_workflow_instance(
                NewWorkflowInstance(
                    workflow_id=wf.id,
                    namespace="ns",
                    group_id="g",
                    status=InstanceStatus.WAITING,
                    trigger_type=TriggerType.API,
                    schedule_time=T0,
                    nodes=(a.id,),
                )
            )
            ids.append(made.id)
    await store.update_workflow_instance(ids[1], status=InstanceStatus.RUNNING)
    await store.update_workflow_instance(ids[2], status=InstanceStatus.SUCCESS, end_time=T0)
    await store.update_workflow_instance(ids[3], status=InstanceStatus.FAILED, end_time=T0)
    assert await store.active_workflow_instance_ids() == [ids[0], ids[1]]
    assert await store.active_workflow_instance_ids(limit=1) == [ids[0]]
