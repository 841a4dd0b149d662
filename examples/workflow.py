"""A workflow: extract, then transform, then load, every night; each step sees its upstream's result."""

from __future__ import annotations

from sx.processors import JobContext, Processor, cron, processor, workflow


@processor(name="examples.extract")
class Extract(Processor):
    def process(self, ctx: JobContext) -> str:
        return f"rows for {ctx.get_instance_parameters() or 'today'}"


@processor(name="examples.transform")
class Transform(Processor):
    def process(self, ctx: JobContext) -> str:
        upstream = {item.job_name: item.data for item in ctx.upstream_data}
        return f"cleaned {upstream['examples.extract']}"


@processor(name="examples.load")
class Load(Processor):
    def process(self, ctx: JobContext) -> str:
        return f"loaded {ctx.getUpstreamData()[0].data}"


NIGHTLY = workflow(
    "examples.nightly-etl",
    schedule=cron("0 30 1 * * ?"),
    edges=[(Extract, Transform), (Transform, Load)],
    description="extract -> transform -> load",
)
