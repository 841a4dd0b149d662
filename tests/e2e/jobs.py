"""Processors the end-to-end tests run in real worker processes (``sx-worker run tests.e2e.jobs``).

Every run appends one JSON line to ``$E2E_EVENTS/<job>.jsonl`` (when that variable is set), so a test
can see when and where a hook ran. The tests create the jobs they need over the OpenAPI, so workers
start with ``--no-sync`` and timed jobs only fire while a test wants them to.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import time
from pathlib import Path
from typing import Any

from sx.processors import (
    BroadcastProcessor,
    JobContext,
    JobSpec,
    JobType,
    Processor,
    ProcessResult,
    api,
    cron,
    fixed_rate,
    processor,
    second_delay,
)

EVENTS_ENV = "E2E_EVENTS"


def record(job: str, **fields: Any) -> None:
    """Append one event line for ``job`` (no-op when ``$E2E_EVENTS`` is unset)."""
    folder = os.environ.get(EVENTS_ENV)
    if not folder:
        return
    line = json.dumps({"pid": os.getpid(), "t": time.time(), **fields}) + "\n"
    with (Path(folder) / f"{job}.jsonl").open("a", encoding="utf-8") as sink:
        # One write per line under a lock: workers of the group append to the same file.
        fcntl.flock(sink, fcntl.LOCK_EX)
        sink.write(line)


def events(folder: Path, job: str) -> list[dict[str, Any]]:
    """Every event recorded for ``job`` so far."""
    path = folder / f"{job}.jsonl"
    if not path.exists():
        return []
    # A line being appended right now may be read in part: only whole lines (ended by "\n") count.
    lines = path.read_text(encoding="utf-8").split("\n")[:-1]
    return [json.loads(line) for line in lines if line.strip()]


def _run_info(ctx: JobContext) -> dict[str, Any]:
    return {
        "instance": ctx.instance_id,
        "job_id": ctx.job_id,
        "attempt": ctx.attempt,
        "schedule": ctx.schedule_time.timestamp(),
        "worker": ctx.worker_addr,
    }


@processor(name="e2e.echo", parameters="job-params", max_concurrency=1000)
class Echo(Processor):
    """Returns what it was given; job parameters come from the definition."""

    def process(self, ctx: JobContext) -> object:
        return {
            "job": ctx.job_parameters,
            "instance": ctx.get_instance_parameters(),
            "attempt": ctx.attempt,
            "pid": os.getpid(),
        }


@processor(name="e2e.noop", max_concurrency=100_000)
class Noop(Processor):
    """Does nothing: for throughput figures."""

    async def process(self, ctx: JobContext) -> None:
        return None


@processor(name="e2e.cron2", schedule=cron("*/2 * * * * ?"))
class EveryTwoSeconds(Processor):
    async def process(self, ctx: JobContext) -> None:
        record("e2e.cron2", **_run_info(ctx))


@processor(name="e2e.rate", schedule=fixed_rate(1))
class FixedRate(Processor):
    async def process(self, ctx: JobContext) -> None:
        record("e2e.rate", **_run_info(ctx))


@processor(name="e2e.delay", schedule=second_delay(1))
class SecondDelay(Processor):
    """Runs half a second; the next run should start a second after this one ended."""

    async def process(self, ctx: JobContext) -> None:
        started = time.time()
        await asyncio.sleep(0.5)
        record("e2e.delay", start=started, end=time.time(), **_run_info(ctx))


@processor(name="e2e.idle", schedule=api())
class NeverByTime(Processor):
    async def process(self, ctx: JobContext) -> None:
        record("e2e.idle", **_run_info(ctx))


@processor(name="e2e.tick", max_concurrency=1000)
class Tick(Processor):
    """Records each run: the crash tests count runs per instance."""

    async def process(self, ctx: JobContext) -> None:
        record("e2e.tick", **_run_info(ctx))


@processor(name="e2e.broadcast")
class EveryWorker(BroadcastProcessor):
    """Each worker returns its sharding id and pid; post_process lists them all."""

    def pre_process(self, ctx: JobContext) -> None:
        record("e2e.broadcast.pre", **_run_info(ctx))

    def process(self, ctx: JobContext) -> str:
        record("e2e.broadcast.process", sharding=ctx.sharding_id, **_run_info(ctx))
        return f"{ctx.sharding_id}@{os.getpid()}"

    def post_process(self, ctx: JobContext) -> object:
        record("e2e.broadcast.post", **_run_info(ctx))
        return {
            "shards": sorted(ctx.task_results),
            "results": [ctx.task_results[k] for k in sorted(ctx.task_results)],
            "num": ctx.sharding_num,
        }


@processor(name="e2e.wait_async")
class WaitAsync(Processor):
    """Waits (on the event loop) until stopped."""

    async def process(self, ctx: JobContext) -> str:
        record("e2e.wait_async", **_run_info(ctx))
        await asyncio.wait_for(ctx.wait_cancelled(), timeout=60)
        return "stopped"


@processor(name="e2e.wait_blocking")
class WaitBlocking(Processor):
    """Waits (in a worker thread) until stopped, checking the flag as blocking code should."""

    def process(self, ctx: JobContext) -> str:
        record("e2e.wait_blocking", **_run_info(ctx))
        deadline = time.monotonic() + 60
        while not ctx.is_cancelled and time.monotonic() < deadline:
            time.sleep(0.02)
        return "stopped"


@processor(name="e2e.sleep", max_attempt=1, attempt_interval=0)
class Sleep(Processor):
    """Sleeps the seconds given as instance parameters, then says which attempt and process ran."""

    async def process(self, ctx: JobContext) -> str:
        record("e2e.sleep", **_run_info(ctx))
        await asyncio.sleep(float(ctx.instance_parameters or "1"))
        return f"slept attempt={ctx.attempt} pid={os.getpid()}"


SCRIPT = JobSpec(
    name="e2e.script",
    job_type=JobType.SHELL,
    # $2 (the instance parameters) is where the test wants the child's pid.
    content='sleep 300 &\necho $! > "$2"\nwait\n',
    schedule=api(),
)
"""A shell job whose script starts a child that would outlive a careless kill."""


@processor(name="e2e.block_once", max_attempt=1, attempt_interval=0)
class BlockOnce(Processor):
    """Blocks its thread, deaf to stop requests, on the first attempt; a retry returns at once.

    So a graceful shutdown cannot drain it: only a second signal ends its worker.
    """

    def process(self, ctx: JobContext) -> str:
        record("e2e.block_once", **_run_info(ctx))
        if ctx.attempt == 0:
            time.sleep(float(ctx.instance_parameters or "60"))
        return f"attempt={ctx.attempt} pid={os.getpid()}"


# -- workflow nodes: each result names its process, so a test sees where every node ran -------------


def _upstream(ctx: JobContext) -> dict[str, str]:
    return {item.job_name: item.data for item in ctx.getUpstreamData()}


@processor(name="e2e.wf.extract")
class WfExtract(Processor):
    def process(self, ctx: JobContext) -> str:
        return f"extract({ctx.instance_parameters})@{os.getpid()}"


@processor(name="e2e.wf.left")
class WfLeft(Processor):
    def process(self, ctx: JobContext) -> str:
        return f"left<{_upstream(ctx)['e2e.wf.extract']}>@{os.getpid()}"


@processor(name="e2e.wf.right")
class WfRight(Processor):
    def process(self, ctx: JobContext) -> str:
        return f"right<{_upstream(ctx)['e2e.wf.extract']}>@{os.getpid()}"


@processor(name="e2e.wf.join")
class WfJoin(Processor):
    def process(self, ctx: JobContext) -> str:
        return json.dumps({"upstream": _upstream(ctx), "pid": os.getpid()}, sort_keys=True)


FLAKY_FLAG = "e2e.wf.flaky.fail"
"""While ``$E2E_EVENTS/<this>`` exists, ``e2e.wf.flaky`` fails (every attempt, on every worker)."""


@processor(name="e2e.wf.flaky", max_attempt=1, attempt_interval=0)
class WfFlaky(Processor):
    def process(self, ctx: JobContext) -> ProcessResult:
        record("e2e.wf.flaky", wf=ctx.wf_instance_id, **_run_info(ctx))
        upstream = _upstream(ctx)["e2e.wf.extract"]
        if (Path(os.environ[EVENTS_ENV]) / FLAKY_FLAG).exists():
            return ProcessResult.failure(f"flaky failed on attempt {ctx.attempt}")
        return ProcessResult.success(f"flaky<{upstream}>@{os.getpid()}")
