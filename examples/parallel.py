"""Parallel: a few hundred subtasks whose states the scheduler keeps, so each one is visible and can be
retried through the OpenAPI (``/openapi/v1/instance/tasks`` and ``/openapi/v1/instance/retryTasks``).
The scheduler keeps at most 300 subtasks per instance in this mode; use grid or batch for more."""

from __future__ import annotations

from sx.processors import JobContext, MapReduceProcessor, ProcessResult, processor


@processor(name="examples.parallel", mode="parallel", consumer_size=4, task_max_attempt=2)
class RefreshAccounts(MapReduceProcessor):
    """Refreshes each account id listed in the job parameters (comma separated)."""

    async def process(self, ctx: JobContext) -> str | None:
        if ctx.is_root_task:
            accounts = [a.strip() for a in (ctx.job_parameters or "a1,a2,a3").split(",") if a.strip()]
            await ctx.map_async(accounts, "Account")
            return None
        return f"refreshed {ctx.task}"

    def reduce(self, ctx: JobContext) -> ProcessResult:
        return ProcessResult.success(f"{len(ctx.task_results) - 1} accounts refreshed")
