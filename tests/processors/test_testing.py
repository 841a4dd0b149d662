"""The public test kit, on the shipped examples and on edge cases."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

import examples.batch
import examples.broadcast
import examples.hello
import examples.map_reduce
import examples.parallel
import examples.scripts
import examples.workflow
from sx.processors import (
    ExecuteMode,
    InstanceStatus,
    JobContext,
    JobType,
    MapProcessor,
    PayloadError,
    Processor,
    ProcessResult,
    Registry,
    RegistryError,
    TimeType,
    UpstreamData,
    default_registry,
    definition_of,
    processor,
    script_processor_for,
    use_registry,
)
from sx.processors.testing import run_processor, run_processor_sync


@pytest.fixture
def registry() -> Iterator[Registry]:
    with use_registry() as fresh:
        yield fresh


def test_hello_example_sync() -> None:
    definition = definition_of(examples.hello.Hello)
    assert definition.mode is ExecuteMode.STANDALONE
    assert definition.spec.schedule.time_type is TimeType.CRON
    assert run_processor_sync(examples.hello.Hello) == ProcessResult.success("hello, world")
    assert run_processor_sync("examples.hello", instance_parameters="ann") == ProcessResult.success(
        "hello, ann"
    )


async def test_broadcast_example_simulates_workers() -> None:
    result = await run_processor(examples.broadcast.CleanTempFiles, sharding_num=4)
    assert result == ProcessResult.success("cleaned on 4 workers")


async def test_map_reduce_example_runs_the_whole_tree() -> None:
    result = await run_processor(examples.map_reduce.SumOfSquares, job_parameters="35")
    assert result == ProcessResult.success(str(sum(n * n for n in range(1, 36))))
    one_range = await run_processor(examples.map_reduce.SumOfSquares, task=[3, 4], task_name="Range")
    assert one_range == ProcessResult.success()


async def test_parallel_example_reduces_every_account() -> None:
    result = await run_processor(examples.parallel.RefreshAccounts, job_parameters="x, y,z")
    assert result == ProcessResult.success("3 accounts refreshed")


async def test_batch_example_maps_its_pages() -> None:
    assert (
        await run_processor(examples.batch.ReindexDocuments, job_parameters="2500") == ProcessResult.success()
    )
    page = await run_processor(examples.batch.ReindexDocuments, task=[1000, 2000], task_name="Page")
    assert page == ProcessResult.success()


async def test_workflow_example_steps_read_their_upstream_results() -> None:
    assert examples.workflow.NIGHTLY.to_create_params()["edges"] == [
        ["examples.extract", "examples.transform"],
        ["examples.transform", "examples.load"],
    ]
    extracted = await run_processor(examples.workflow.Extract, instance_parameters="2030-01-01")
    assert extracted == ProcessResult.success("rows for 2030-01-01")
    upstream = [UpstreamData(job_name="examples.extract", data=extracted.result)]
    transformed = await run_processor(examples.workflow.Transform, upstream_data=upstream)
    assert transformed == ProcessResult.success("cleaned rows for 2030-01-01")
    loaded = await run_processor(
        examples.workflow.Load, upstream_data=[UpstreamData("examples.transform", transformed.result)]
    )
    assert loaded == ProcessResult.success("loaded cleaned rows for 2030-01-01")


async def test_script_example_runs_with_the_script_processor() -> None:
    spec = examples.scripts.DISK_REPORT
    ctx = JobContext(job_type=spec.job_type, content=spec.content, job_parameters=spec.parameters)
    result = await script_processor_for(JobType.SHELL).process(ctx)
    assert result.ok and result.result.startswith("report for nightly\n")


async def test_context_fields_reach_the_hook(registry: Registry) -> None:
    seen: list[JobContext] = []

    @processor(name="fields")
    class Fields(Processor):
        def process(self, ctx: JobContext) -> None:
            seen.append(ctx)

    when = datetime(2024, 1, 2, tzinfo=UTC)
    upstream = [UpstreamData(job_name="up", data="1")]
    result = await run_processor(
        "fields",
        job_parameters="jp",
        instance_parameters="ip",
        task={"k": 1},
        sharding_id=2,
        sharding_num=5,
        schedule_time=when,
        upstream_data=upstream,
        job_id=9,
        instance_id=90,
    )
    assert result.ok
    ctx = seen[0]
    assert (ctx.job_name, ctx.job_id, ctx.instance_id) == ("fields", 9, 90)
    assert (ctx.job_parameters, ctx.instance_parameters, ctx.task) == ("jp", "ip", {"k": 1})
    assert (ctx.sharding_id, ctx.sharding_num, ctx.schedule_time) == (2, 5, when)
    assert ctx.upstream_data == upstream


async def test_runaway_map_is_stopped(registry: Registry) -> None:
    @processor(name="loop")
    class Loop(MapProcessor):
        def process(self, ctx: JobContext) -> None:
            ctx.map([1, 2], "Again")

    result = await run_processor(Loop, max_tasks=50)
    assert result.status is InstanceStatus.FAILED
    assert "more than 50 tasks" in result.result
    assert PayloadError.__name__ in result.result


async def test_unknown_name(registry: Registry) -> None:
    with pytest.raises(RegistryError, match="not registered"):
        await run_processor("nobody")


def test_examples_registered_in_the_default_registry() -> None:
    names = set(default_registry().names)
    assert {"examples.hello", "examples.broadcast", "examples.map_reduce"} <= names
