"""Processors for the observability end-to-end tests (``sx-worker run tests.e2e.ops_jobs``)."""

from __future__ import annotations

import logging

from sx.processors import JobContext, Processor, cron, processor

log = logging.getLogger("tests.e2e.ops_jobs")


@processor(name="ops.log")
class LogsTwice(Processor):
    """Logs once through the context's logger and once through a plain module logger."""

    def process(self, ctx: JobContext) -> str:
        ctx.logger.info("through ctx.logger")
        log.info("through a module logger")
        return "logged"


@processor(name="ops.cron", schedule=cron("* * * * * ?"))
class EverySecond(Processor):
    async def process(self, ctx: JobContext) -> None:
        return None
