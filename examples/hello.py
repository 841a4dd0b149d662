"""Standalone: one worker runs ``process`` every ten seconds."""

from __future__ import annotations

from sx.processors import JobContext, Processor, cron, processor


@processor(name="examples.hello", schedule=cron("*/10 * * * * ?"), description="Says hello every 10 s")
class Hello(Processor):
    """Greets whoever the job parameters name."""

    def process(self, ctx: JobContext) -> str:
        who = ctx.instance_parameters or ctx.job_parameters or "world"
        ctx.logger.info("greeting %s", who)
        return f"hello, {who}"
