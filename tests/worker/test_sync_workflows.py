"""Workflow sync: create, update, leave unchanged, prune (disable or delete) managed workflows."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sx.processors import JobContext, Processor, Registry, WorkflowRegistry, processor, workflow
from sx.worker._sync import Action, SyncOptions, sync_definitions
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
