"""Batch: subtask states live in a SQLite file on the master's disk, so memory stays flat up to a
million subtasks and a restarted master resumes where it was. This one maps without reducing, so no
results are kept at all."""

from __future__ import annotations

from sx.processors import JobContext, MapProcessor, processor

PAGE = 1000


@processor(name="examples.batch", mode="batch", page_size=200, consumer_size=8)
class ReindexDocuments(MapProcessor):
    """Reindexes document ids 0..N-1 (N from the job parameters), a page of ids per subtask."""

    def process(self, ctx: JobContext) -> None:
        if ctx.is_root_task:
            count = int(ctx.job_parameters or "100000")
            ctx.map([[start, min(start + PAGE, count)] for start in range(0, count, PAGE)], "Page")
            return
        start, end = ctx.task
        ctx.logger.debug("reindexing documents %d..%d", start, end - 1)
