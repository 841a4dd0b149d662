"""Workflow sync: create, update, leave unchanged, prune (disable or delete) managed workflows."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sx.processors import JobContext, JobSpec, Processor, Registry, WorkflowRegistry, processor, workflow
from sx.worker.openapi import Action, Outcome, SyncOptions, apply_plan, plan_sync, sync_definitions
from sx.worker.testing import LocalScheduler

registry = Registry()


@processor(name="s.a", registry=registry)
class A(Processor):
    def process(self, ctx: JobContext) -> str:
        return "a"


@processor(name="s.b", registry=registry)
class B(Processor):
    def process(self, ctx: JobContext) -> str:
        return "b"


@pytest.fixture
async def sched(tmp_path: Path) -> AsyncIterator[LocalScheduler]:
    async with LocalScheduler(tmp_path, registry=registry, start_worker=False) as local:
        yield local


async def test_sync_creates_updates_and_prunes_workflows(sched: LocalScheduler) -> None:
    jobs = registry.all()
    first = WorkflowRegistry()
    workflow("one", edges=[(A, B)], registry=first)
    workflow("two", nodes=[A], registry=first)
    result = await sync_definitions(sched.client, jobs, SyncOptions(), workflows=first.all())
    assert result.ok, result.summary()
    assert [e.action for e in result.workflows] == [Action.CREATE, Action.CREATE]
    one = await sched.client.find_workflow("one")
    assert one is not None and one.managed and one.spec.edges == (("s.a", "s.b"),)

    second = WorkflowRegistry()
    workflow("one", nodes=[A, B], registry=second)  # edge removed
    result = await sync_definitions(sched.client, jobs, SyncOptions(prune=True), workflows=second.all())
    assert result.ok, result.summary()
    actions = {e.name: e.action for e in result.workflows}
    assert actions == {"one": Action.UPDATE, "two": Action.DISABLE}
    assert (await sched.client.get_workflow(one.workflow_id)).spec.edges == ()
    two = await sched.client.find_workflow("two")
    assert two is not None and not two.enabled

    result = await sync_definitions(
        sched.client, jobs, SyncOptions(prune=True, delete=True), workflows=second.all()
    )
    assert {e.name: e.action for e in result.workflows} == {"one": Action.UNCHANGED, "two": Action.DELETE}
    assert await sched.client.find_workflow("two") is None
    assert "workflows:" in result.summary()


async def test_a_refused_workflow_is_a_failed_entry(sched: LocalScheduler) -> None:
    workflows = WorkflowRegistry()
    workflow("ghost", edges=[(A, "s.missing")], registry=workflows)
    result = await sync_definitions(sched.client, registry.all(), SyncOptions(), workflows=workflows.all())
    assert not result.ok
    [entry] = result.workflows
    assert entry.failed and entry.error is not None and "s.missing" in entry.error


async def test_atomic_refused_workflow_applies_no_job(sched: LocalScheduler) -> None:
    workflows = WorkflowRegistry()
    workflow("ghost", edges=[(A, "s.missing")], registry=workflows)
    options = SyncOptions(atomic=True)
    result = await sync_definitions(sched.client, registry.all(), options, workflows=workflows.all())
    assert not result.ok and not result.rolled_back
    assert await sched.client.all_jobs() == []
    assert [e.outcome for e in result.entries] == [Outcome.SKIPPED, Outcome.SKIPPED]
    [entry] = result.workflows
    assert entry.failed and entry.error_field == "nodes" and entry.error is not None
    assert "job named 's.missing' does not exist in group 'default'" in entry.error
    assert "workflow 'ghost': nodes:" in result.summary() and "nothing applied" in result.summary()


async def test_atomic_undoes_jobs_and_workflows_when_the_scheduler_refuses_a_workflow(
    sched: LocalScheduler,
) -> None:
    client = sched.client
    before = WorkflowRegistry()
    workflow("w0", nodes=[A], registry=before)
    assert (await sync_definitions(client, [registry.get("s.a")], workflows=before.all())).ok
    hand_made = await client.create_job(JobSpec(name="s.hand", class_name="app:Hand"))
    after = WorkflowRegistry()
    workflow("w0", nodes=[A, B], registry=after)  # an update, applied before the refusal
    workflow("w1", edges=[(A, "s.hand")], registry=after)
    options = SyncOptions(atomic=True)
    plan = await plan_sync(client, registry.all(), options, workflows=after.all())
    assert not plan.invalid
    await client.delete_job(hand_made)  # gone between plan and apply: the scheduler refuses w1
    result = await apply_plan(client, plan, options)
    assert not result.ok and result.rolled_back and not result.rollback_errors
    [refused] = [e for e in result.workflows if e.failed]
    assert refused.name == "w1" and refused.error_field == "nodes"
    assert refused.error is not None and "does not exist" in refused.error  # the scheduler's message
    assert "rolled back 2 change(s)" in result.summary()
    assert [job.name for job in await client.all_jobs()] == ["s.a"]  # s.b created, then deleted
    w0 = await client.find_workflow("w0")
    assert w0 is not None and w0.spec.nodes == ("s.a",)
    assert await client.find_workflow("w1") is None


async def test_two_deploys_creating_the_same_workflow_leave_one(sched: LocalScheduler) -> None:
    workflows = WorkflowRegistry()
    workflow("shared", edges=[(A, B)], registry=workflows)
    # Both plan before either applies: both see no workflow and plan to create it.
    first = await plan_sync(sched.client, registry.all(), workflows=workflows.all())
    second = await plan_sync(sched.client, registry.all(), workflows=workflows.all())
    assert [e.action for e in first.workflows] == [e.action for e in second.workflows] == [Action.CREATE]
    done_first = await apply_plan(sched.client, first)
    done_second = await apply_plan(sched.client, second)
    assert done_first.ok and done_second.ok, done_second.summary()
    [entry] = done_second.workflows
    assert entry.action is Action.UNCHANGED and entry.note == "created meanwhile by someone else"
    assert [w.name for w in await sched.client.all_workflows()] == ["shared"]
