"""Job sync against a real scheduler over HTTP: plan, apply, prune, races, refusals, rollback."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sx.processors import (
    Contact,
    JobContext,
    JobSpec,
    JobType,
    MapOptions,
    MapProcessor,
    MonitorOptions,
    Processor,
    Registry,
    cron,
    processor,
    second_delay,
)
from sx.worker.openapi import Action, OpenApiClient, Outcome, SyncOptions, plan_sync, sync_definitions
from tests.worker.openapi.test_client import client_for, full_spec, live_scheduler


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[OpenApiClient]:
    async with live_scheduler(tmp_path) as url, client_for(url) as opened:
        await opened.ensure_group()
        yield opened


def spec(name: str, **fields: object) -> JobSpec:
    return JobSpec(name=name, class_name=f"app.jobs:{name}", **fields)


async def test_create_then_nothing_changes(client: OpenApiClient) -> None:
    specs = [spec("a"), spec("b", schedule=cron("0 0 * * * ?")), full_spec()]
    first = await sync_definitions(client, specs)
    assert first.ok and first.counts["create"] == 3
    jobs = {job.name: job for job in await client.all_jobs()}
    assert all(job.managed for job in jobs.values())
    for wanted in specs:
        assert jobs[wanted.name].spec == wanted  # read back through GetJobInfo
    second = await sync_definitions(client, specs)
    assert second.ok and second.counts["unchanged"] == 3
    assert sum(second.counts[a.value] for a in Action if a is not Action.UNCHANGED) == 0
    assert [job.job_id for job in await client.all_jobs()] == [j.job_id for j in jobs.values()]


async def test_processor_definitions_are_synced(client: OpenApiClient) -> None:
    registry = Registry()

    @processor(name="sync.hello", schedule=cron("*/10 * * * * ?"), max_attempt=2, registry=registry)
    class Hello(Processor):
        def process(self, ctx: JobContext) -> None:
            return None

    result = await sync_definitions(client, registry.all())
    assert result.ok and result.counts["create"] == 1
    job = await client.find_job("sync.hello")
    assert job is not None and job.spec == registry.get("sync.hello").spec and job.managed


async def test_update_each_kind_of_field(client: OpenApiClient) -> None:
    base = full_spec("job")
    await sync_definitions(client, [base])
    changed = base.model_copy(
        update={
            "description": "new text",  # string
            "max_attempt": 9,  # integer
            "schedule": second_delay(5),  # schedule (time type and expression)
            "data_offset": 0,
            "map": MapOptions(page_size=1),  # nested section
            "monitor": MonitorOptions(fail_enable=False, contacts=(Contact(user_name="x"),)),  # bools, list
        }
    )
    changed = JobSpec.model_validate(changed.model_dump())
    plan = await plan_sync(client, [changed])
    [entry] = plan.entries
    assert entry.action is Action.UPDATE
    assert {"description", "maxAttempt", "timeType", "timeExpression", "dataOffset", "pageSize"} <= set(
        entry.changes
    )
    assert {"failEnable", "timeoutEnable", "contactInfo"} <= set(entry.changes)
    assert entry.changes["maxAttempt"] == (2, 9)
    assert "maxAttempt" in plan.table() and "2 -> 9" in plan.table()
    result = await sync_definitions(client, [changed])
    assert result.ok and result.counts["update"] == 1
    job = await client.find_job("job")
    assert job is not None and job.spec == changed


async def test_prune_disables_then_deletes_only_managed_jobs(client: OpenApiClient) -> None:
    await sync_definitions(client, [spec("keep"), spec("gone")])
    hand_made = await client.create_job(spec("by-hand"))
    no_prune = await sync_definitions(client, [spec("keep")])
    assert no_prune.counts["disable"] == 0 and (await client.find_job("gone") or pytest.fail()).enabled
    pruned = await sync_definitions(client, [spec("keep")], SyncOptions(prune=True))
    assert pruned.ok and pruned.counts["disable"] == 1
    gone = await client.find_job("gone")
    assert gone is not None and not gone.enabled
    again = await sync_definitions(client, [spec("keep")], SyncOptions(prune=True))
    assert again.counts["disable"] == 0 and again.counts["unchanged"] == 2
    deleted = await sync_definitions(client, [spec("keep")], SyncOptions(prune=True, delete=True))
    assert deleted.counts["delete"] == 1 and await client.find_job("gone") is None
    by_hand = await client.get_job(hand_made)
    assert by_hand.enabled and not by_hand.managed
    with pytest.raises(ValueError, match="prune"):
        SyncOptions(delete=True)


async def test_a_hand_made_job_of_the_same_name_is_adopted(client: OpenApiClient) -> None:
    job_id = await client.create_job(spec("shared"))
    result = await sync_definitions(client, [spec("shared")])
    [entry] = result.entries
    assert entry.action is Action.UPDATE and entry.changes == {"managed": (False, True)}
    assert (await client.get_job(job_id)).managed


async def test_dry_run_changes_nothing(client: OpenApiClient) -> None:
    await sync_definitions(client, [spec("old")])
    result = await sync_definitions(
        client, [spec("new"), spec("old", max_attempt=3)], SyncOptions(dry_run=True, prune=True)
    )
    assert result.ok and result.dry_run
    assert (result.counts["create"], result.counts["update"]) == (1, 1)
    assert "to create" in result.summary()
    assert [job.name for job in await client.all_jobs()] == ["old"]
    assert (await client.find_job("old") or pytest.fail()).spec == spec("old")


async def test_concurrent_syncs_never_duplicate(client: OpenApiClient) -> None:
    specs = [spec(f"job-{i}") for i in range(8)]
    async with client_for(client.base_url) as other:
        first, second = await asyncio.gather(
            sync_definitions(client, specs), sync_definitions(other, list(reversed(specs)))
        )
    assert first.ok and second.ok
    names = [job.name for job in await client.all_jobs()]
    assert sorted(names) == sorted(s.name for s in specs)


async def test_refused_definition_without_atomic_applies_the_rest(client: OpenApiClient) -> None:
    bad = spec("bad", schedule=cron("0 0 1 * * ?"), calendar="no-such-calendar")
    result = await sync_definitions(client, [spec("good"), bad])
    assert not result.ok and result.counts["create"] == 1
    [failure] = result.failed
    assert failure.name == "bad" and failure.error_field == "calendar"
    assert "job 'bad': calendar" in result.summary()
    assert [job.name for job in await client.all_jobs()] == ["good"]


async def test_refused_definition_with_atomic_applies_nothing(client: OpenApiClient) -> None:
    bad = spec("bad", schedule=cron("0 0 1 * * ?"), calendar="no-such-calendar")
    result = await sync_definitions(client, [spec("good"), bad], SyncOptions(atomic=True))
    assert not result.ok and result.counts["create"] == 0
    assert {e.name: e.outcome for e in result.entries} == {"good": Outcome.SKIPPED, "bad": Outcome.FAILED}
    assert await client.all_jobs() == []


async def test_atomic_rolls_back_when_the_scheduler_refuses_while_applying(client: OpenApiClient) -> None:
    await sync_definitions(client, [spec("existing")])
    # Valid as a JobSpec, but its request body is over the scheduler's 1 MiB limit once escaped.
    too_big = JobSpec(name="script", job_type=JobType.SHELL, content="\x01" * 200_000)
    specs = [spec("existing", max_attempt=4), spec("fresh"), too_big]
    result = await sync_definitions(client, specs, SyncOptions(atomic=True))
    assert not result.ok and result.rolled_back and not result.rollback_errors
    [failure] = result.failed
    assert failure.name == "script" and failure.error_field == "body"
    assert "rolled back 2" in result.summary()
    assert [job.name for job in await client.all_jobs()] == ["existing"]
    existing = await client.find_job("existing")
    assert existing is not None and existing.spec == spec("existing") and existing.managed
    without_atomic = await sync_definitions(client, specs)
    assert not without_atomic.ok and without_atomic.counts["create"] == 1
    assert without_atomic.counts["update"] == 1


async def test_progress_and_json(client: OpenApiClient) -> None:
    lines: list[str] = []
    options = SyncOptions(progress_every=2, progress=lines.append)
    result = await sync_definitions(client, [spec(f"p{i}") for i in range(5)], options)
    assert lines == ["sync: 2/5 jobs applied", "sync: 4/5 jobs applied", "sync: 5/5 jobs applied"]
    data = result.to_json()
    assert data["ok"] is True and data["counts"]["create"] == 5
    assert {job["name"] for job in data["jobs"]} == {f"p{i}" for i in range(5)}
    assert all(isinstance(job["jobId"], int) for job in data["jobs"])


async def test_synced_specs_read_back_equal_through_get_job_info(client: OpenApiClient) -> None:
    registry = Registry()

    @processor(name="rt.map", mode="parallel", schedule=second_delay(30), page_size=9, registry=registry)
    class Fan(MapProcessor):
        def process(self, ctx: JobContext) -> None:
            return None

    script = JobSpec(name="rt.script", job_type=JobType.SHELL, content="echo 'hi'\n", parameters="p=1")
    specs = [full_spec("rt.full"), spec("rt.plain"), script, registry.get("rt.map").spec]
    result = await sync_definitions(client, specs)
    assert result.ok and result.counts["create"] == len(specs)
    for entry, original in zip(result.entries, specs, strict=True):
        assert entry.job_id is not None
        assert (await client.get_job(entry.job_id)).spec == original
    # And through an update: every field of the changed definition reads back as sent.
    changed = full_spec("rt.full").model_copy(update={"max_attempt": 7, "parameters": "b=2"})
    updated = await sync_definitions(client, [changed])
    [entry] = updated.entries
    assert entry.action is Action.UPDATE and entry.job_id is not None
    assert entry.job_id == result.entries[0].job_id
    assert (await client.get_job(entry.job_id)).spec == changed
