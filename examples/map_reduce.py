"""Map with a nested map, then reduce: the sum of squares of 1..N (N from the job parameters).

The root splits 1..N into ranges ("Range" tasks); each range maps its numbers ("Square" tasks);
each square task returns its square and reduce adds them up.
"""

from __future__ import annotations

from sx.processors import JobContext, MapReduceProcessor, ProcessResult, TaskStatus, processor

RANGE_SIZE = 10


@processor(name="examples.map_reduce", mode="grid", consumer_size=4)
class SumOfSquares(MapReduceProcessor):
    """Only square tasks return a number; the root and range tasks return nothing."""

    def process(self, ctx: JobContext) -> int | None:
        if ctx.is_root_task:
            count = int(ctx.job_parameters or "100")
            ranges = [
                [start, min(start + RANGE_SIZE - 1, count)] for start in range(1, count + 1, RANGE_SIZE)
            ]
            ctx.map(ranges, "Range")
            return None
        if ctx.task_name == "Range":
            first, last = ctx.task
            ctx.map(list(range(first, last + 1)), "Square")
            return None
        number: int = ctx.task
        return number * number

    def reduce(self, ctx: JobContext) -> ProcessResult:
        failed = [task_id for task_id, status in ctx.task_statuses.items() if status is TaskStatus.FAILED]
        if failed:
            return ProcessResult.failure(f"{len(failed)} tasks failed")
        return ProcessResult.success(str(sum(int(result) for result in ctx.task_results.values() if result)))
