"""Processors the scheduler-replica tests run in worker processes: every run of ``e2e.replica.tick``
records itself (instance, job, schedule time), so the test can count runs per fire; ``e2e.replica.hold``
runs until the test opens its gate (a file named by the instance parameters)."""

from __future__ import annotations

import time
from pathlib import Path

from sx.processors import JobContext, Processor, processor
from tests.e2e.jobs import record


@processor(name="e2e.replica.tick", max_concurrency=1)
class Tick(Processor):
    def process(self, ctx: JobContext) -> str:
        record(
            "e2e.replica.tick",
            instance=ctx.instance_id,
            job_id=ctx.job_id,
            schedule=ctx.schedule_time.timestamp(),
            attempt=ctx.attempt,
        )
        return "ticked"


@processor(name="e2e.replica.hold", max_attempt=0, max_concurrency=10)
class Hold(Processor):
    def process(self, ctx: JobContext) -> str:
        gate = Path(str(ctx.instance_parameters))
        while not gate.exists():
            time.sleep(0.02)
        record("e2e.replica.hold", instance=ctx.instance_id, attempt=ctx.attempt)
        return f"held attempt={ctx.attempt}"
