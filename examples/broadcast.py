"""Broadcast: every worker of the group runs ``process``; the master prepares and sums up."""

from __future__ import annotations

import socket

from sx.processors import BroadcastProcessor, JobContext, ProcessResult, TaskStatus, processor


@processor(name="examples.broadcast")
class CleanTempFiles(BroadcastProcessor):
    """Each worker reports its host; post_process counts the workers that succeeded."""

    def pre_process(self, ctx: JobContext) -> None:
        ctx.logger.info("cleaning on %d workers", ctx.sharding_num)

    async def process(self, ctx: JobContext) -> str:
        return f"{ctx.sharding_id}/{ctx.sharding_num} on {socket.gethostname()}"

    def post_process(self, ctx: JobContext) -> ProcessResult:
        done = sum(1 for status in ctx.task_statuses.values() if status is TaskStatus.SUCCESS)
        total = len(ctx.task_statuses)
        if done < total:
            return ProcessResult.failure(f"{total - done} of {total} workers failed")
        return ProcessResult.success(f"cleaned on {done} workers")
