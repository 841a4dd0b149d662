"""Processors for the re-run and backfill end-to-end tests (``sx-worker run tests.e2e.rerun_jobs``).

Every run (and every map subtask) appends one line to ``$E2E_EVENTS/<job>.jsonl`` (see
``tests.e2e.jobs.record``) with its instance, data time and instance parameters, so a test sees exactly
what ran where and for which data time.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from sx.processors import JobContext, MapReduceProcessor, Processor, cron, processor
from tests.e2e.jobs import EVENTS_ENV, record


def _marker(ctx: JobContext) -> Path:
    return Path(os.environ.get(EVENTS_ENV, ".")) / f"failed-once-{ctx.job_id}"


def _data_time(ctx: JobContext) -> float:
    return ctx.data_time.timestamp() if ctx.data_time is not None else 0.0


@processor(name="e2e.rerun.step", max_concurrency=1)
class Step(Processor):
    """Instance parameters: ``fail`` raises; ``block`` runs until killed; ``sleep:S`` sleeps S seconds;
    anything else succeeds at once."""

    async def process(self, ctx: JobContext) -> str:
        record(
            "e2e.rerun.step", instance=ctx.instance_id, data=_data_time(ctx), params=ctx.instance_parameters
        )
        if ctx.instance_parameters == "fail":
            raise RuntimeError("asked to fail")
        if ctx.instance_parameters == "block":
            await asyncio.sleep(3600)
        if ctx.instance_parameters.startswith("sleep:"):
            await asyncio.sleep(float(ctx.instance_parameters.split(":", 1)[1]))
        return f"ran for {_data_time(ctx)}"


@processor(name="e2e.rerun.map", max_concurrency=1)
class FanOutOnce(MapReduceProcessor):
    """Maps five subtasks; with instance parameters ``fail-once`` subtask 3 fails the first time this
    job runs it (a marker file remembers), so the instance fails and a re-run of it succeeds."""

    async def process(self, ctx: JobContext) -> object:
        if ctx.is_root_task:
            await ctx.map_async([1, 2, 3, 4, 5], "item")
            return "root"
        record("e2e.rerun.map", instance=ctx.instance_id, item=ctx.task)
        if ctx.instance_parameters == "fail-once" and ctx.task == 3 and not _marker(ctx).exists():
            _marker(ctx).touch()
            raise RuntimeError("subtask 3 fails once")
        return str(ctx.task)

    def reduce(self, ctx: JobContext) -> str:
        return ",".join(sorted(r for t, r in ctx.task_results.items() if t != 0 and r != "root"))


@processor(name="e2e.rerun.every2s", schedule=cron("*/2 * * * * ?"), max_concurrency=1)
class EveryTwoSeconds(Processor):
    """A live cron job, every 2 s; it takes a moment so backfill instances overlap it."""

    async def process(self, ctx: JobContext) -> str:
        record("e2e.rerun.every2s", instance=ctx.instance_id, data=_data_time(ctx))
        await asyncio.sleep(0.3)
        return "ok"
