"""Processors for the worker metrics and tracing tests (``sx-worker run tests.e2e.metrics_jobs``)."""

from __future__ import annotations

from sx.processors import JobContext, MapProcessor, Processor, processor

SUBTASKS = 4


@processor(name="metrics.plain")
class Plain(Processor):
    def process(self, ctx: JobContext) -> str:
        return "done"


@processor(name="metrics.fails", max_attempt=0)
class Fails(Processor):
    def process(self, ctx: JobContext) -> str:
        raise RuntimeError("on purpose")


@processor(name="metrics.map", mode="grid")
class FansOut(MapProcessor):
    """The root maps ``SUBTASKS`` parts; each subtask returns its part."""

    def process(self, ctx: JobContext) -> str:
        if ctx.is_root_task:
            ctx.map(list(range(SUBTASKS)), "parts")
            return "mapped"
        return str(ctx.task)
