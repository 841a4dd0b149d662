"""The pytest plugin (``sx.worker.pytest_plugin``, loaded through its ``pytest11`` entry point), used the
way a user's project uses it: test files run by a fresh pytest process in a temporary directory."""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]

JOBS = """
import asyncio
from sx.processors import MapReduceProcessor, JobContext, Processor, Registry, cron, processor

registry = Registry()


@processor(name="user.hello", parameters="world", registry=registry)
class Hello(Processor):
    def process(self, ctx: JobContext) -> str:
        return f"hello, {ctx.get_instance_parameters() or ctx.job_parameters}"


@processor(name="user.sum", registry=registry)
class Sum(MapReduceProcessor):
    def process(self, ctx: JobContext) -> object:
        if ctx.is_root_task:
            ctx.map(list(range(1, 5)), "part")
            return None
        return ctx.task * 10

    def reduce(self, ctx: JobContext) -> int:
        return sum(int(v) for v in ctx.task_results.values() if v)


@processor(name="user.every-minute", schedule=cron("0 * * * * ?"), registry=registry)
class EveryMinute(Processor):
    def process(self, ctx: JobContext) -> str:
        return ctx.schedule_time.isoformat()
"""

CONFTEST = """
import pytest
from jobs import registry


@pytest.fixture
def sx_registry():
    return registry
"""

INI = """
[pytest]
asyncio_mode = strict
asyncio_default_fixture_loop_scope = function
filterwarnings =
    error
    ignore:'imghdr' is deprecated:DeprecationWarning
"""


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makeini(INI)
    pytester.makepyfile(jobs=JOBS)
    pytester.makeconftest(CONFTEST)
    return pytester


def test_run_processor_runs_hooks_in_process_sync_and_async(project: pytest.Pytester) -> None:
    project.makepyfile(
        test_unit="""
        import pytest
        from jobs import Hello, Sum


        def test_sync(run_processor):
            assert run_processor.sync(Hello, instance_parameters="Ada").result == "hello, Ada"
            assert run_processor.sync("user.sum").result == "100"


        @pytest.mark.asyncio
        async def test_async(run_processor):
            assert (await run_processor(Hello, job_parameters="you")).result == "hello, you"
        """
    )
    result = project.runpytest_subprocess("-q")
    result.assert_outcomes(passed=2)


def test_local_scheduler_runs_jobs_through_a_real_scheduler(project: pytest.Pytester) -> None:
    project.makepyfile(
        test_integration="""
        import pytest
        from jobs import Hello


        @pytest.mark.asyncio
        async def test_run(local_scheduler):
            outcome = await local_scheduler.run_job(Hello, instance_parameters="Bo")
            assert outcome.ok and outcome.result == "hello, Bo"
            assert local_scheduler.server is not None and local_scheduler.worker is not None
        """
    )
    result = project.runpytest_subprocess("-q")
    result.assert_outcomes(passed=1)


def test_the_marker_gives_a_manual_clock_for_cron_jobs(project: pytest.Pytester) -> None:
    project.makepyfile(
        test_cron="""
        from datetime import UTC, datetime

        import pytest
        from sx.processors import next_fire_times
        from jobs import EveryMinute

        START = datetime(2031, 1, 1, 8, 0, 30, tzinfo=UTC)


        @pytest.mark.asyncio
        @pytest.mark.sx_scheduler(manual_clock=True, start_time=START)
        async def test_every_minute(local_scheduler):
            assert local_scheduler.now() == START
            await local_scheduler.job_id(EveryMinute)
            fires = next_fire_times("0 * * * * ?", "UTC", 3, after=START)
            for fire in fires:
                await local_scheduler.set_time(fire)
            runs = await local_scheduler.wait_instances(EveryMinute, 1)
            assert datetime.fromisoformat(runs[-1].result) in fires


        def test_a_schedule_is_checked_without_a_scheduler():
            (fire,) = next_fire_times("0 0 2 * * ?", "Asia/Shanghai", 1, after=START)
            assert (fire.day, fire.hour) == (2, 2)
        """
    )
    result = project.runpytest_subprocess("-q")
    result.assert_outcomes(passed=2)


def test_a_marker_with_positional_arguments_is_a_usage_error(project: pytest.Pytester) -> None:
    project.makepyfile(
        test_bad="""
        import pytest


        @pytest.mark.asyncio
        @pytest.mark.sx_scheduler(True)
        async def test_bad(local_scheduler):
            pass
        """
    )
    result = project.runpytest_subprocess("-q")
    result.stdout.fnmatch_lines(["*sx_scheduler takes keyword options only*"])
    assert result.ret != 0


def test_the_plugin_is_registered_and_its_marker_documented(project: pytest.Pytester) -> None:
    result = project.runpytest_subprocess("--markers")
    result.stdout.fnmatch_lines(["*@pytest.mark.sx_scheduler(**options)*"])
    fixtures = project.runpytest_subprocess("--fixtures")
    for name in ("local_scheduler", "run_processor", "sx_registry"):
        fixtures.stdout.fnmatch_lines([f"{name} -- *pytest_plugin.py*"])
