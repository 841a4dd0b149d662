"""Processors for the online-log end-to-end tests (``sx-worker run tests.e2e.log_jobs``)."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from sx.processors import JobContext, MapProcessor, Processor, processor
from tests.e2e.jobs import EVENTS_ENV, record

log = logging.getLogger("tests.e2e.log_jobs")


@processor(name="logs.standalone")
class LogsThroughTheContext(Processor):
    """Lines through ``ctx.logger`` (shipped), and a plain logger and print (not: no captureLogs)."""

    def process(self, ctx: JobContext) -> str:
        ctx.logger.info("hello %s", "world")
        ctx.logger.warning("careful")
        try:
            raise ValueError("bad value")
        except ValueError:
            ctx.logger.exception("it failed")
        log.warning("plain logger, not captured")
        print("printed, not captured")
        return "logged"


@processor(name="logs.capture", capture_logs=True)
class CapturesPlainLogging(Processor):
    """With captureLogs: a plain logger's lines and prints are shipped too."""

    def process(self, ctx: JobContext) -> str:
        ctx.logger.info("through ctx.logger")
        log.warning("through a plain logger")
        print("through print")
        return "captured"


@processor(name="logs.map", mode="grid")
class LogsPerSubtask(MapProcessor):
    """The root maps three parts; each subtask logs one line naming its part."""

    def process(self, ctx: JobContext) -> str:
        if ctx.is_root_task:
            ctx.logger.info("mapping")
            ctx.map(["a", "b", "c"], "parts")
            return "mapped"
        ctx.logger.info("part %s", ctx.task)
        return str(ctx.task)


@processor(name="logs.many")
class LogsManyLines(Processor):
    """Logs as many lines as its job parameters say."""

    def process(self, ctx: JobContext) -> str:
        count = int(ctx.job_parameters or "0")
        for n in range(count):
            ctx.logger.info("line %d", n)
        return f"{count} lines"


@processor(name="logs.ticks")
class LogsTicks(Processor):
    """Logs "tick 0", waits for the file ``$E2E_EVENTS/ticks-gate``, then logs the other ticks (as many
    in all as its job parameters say): a follower sees the first line while the instance runs."""

    def process(self, ctx: JobContext) -> str:
        ctx.logger.info("tick 0")
        gate = Path(os.environ[EVENTS_ENV]) / "ticks-gate"
        while not gate.exists():
            ctx.check_cancelled()
            time.sleep(0.05)
        for n in range(1, int(ctx.job_parameters or "1")):
            ctx.logger.info("tick %d", n)
        return "ticked"


@processor(name="logs.gated")
class LogsAfterTheGate(Processor):
    """Waits for the file ``$E2E_EVENTS/gate``, then logs as many lines as its job parameters say and
    records ``logs.gated`` (the test closes the scheduler before opening the gate)."""

    def process(self, ctx: JobContext) -> str:
        gate = Path(os.environ[EVENTS_ENV]) / "gate"
        record("logs.gated-waiting", instance=ctx.instance_id)
        while not gate.exists():
            ctx.check_cancelled()
            time.sleep(0.05)
        count = int(ctx.job_parameters or "0")
        for n in range(count):
            ctx.logger.info("gated %d", n)
        record("logs.gated", instance=ctx.instance_id)
        return f"{count} lines"
