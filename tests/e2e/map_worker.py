"""A worker process for the end-to-end map tests: ``python -m tests.e2e.map_worker``.

Settings come from ``SX_*`` environment variables (server, namespace, group, app key, data_dir). Each
subtask execution appends ``<instance> <task id> <value>`` to ``$E2E_OUT/runs-<pid>.txt`` so a test can
count executions across processes.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
from pathlib import Path

from sx.processors import JobContext, MapReduceProcessor, Registry, TaskStatus, processor
from sx.worker import Worker, WorkerSettings

registry = Registry()
_running: dict[int, int] = {}


def _record(ctx: JobContext) -> None:
    out = os.environ.get("E2E_OUT")
    if out:
        with open(Path(out) / f"runs-{os.getpid()}.txt", "a") as file:
            file.write(f"{ctx.instance_id} {ctx.task_id} {ctx.task}\n")


@processor(name="e2e.fanout", registry=registry)
class FanOut(MapReduceProcessor):
    """Parameters (JSON): ``n`` level1 items; ``nested``: even items map two level2 children; ``sleep``
    seconds per subtask. Each subtask returns ``"<value>|<pid>|<tasks running here now>"``."""

    async def process(self, ctx: JobContext) -> object:
        params = json.loads(ctx.job_parameters or "{}")
        if ctx.is_root_task:
            n = int(params.get("n", 10))
            for start in range(0, n, 1000):
                await ctx.map_async(list(range(start, min(n, start + 1000))), "level1")
            return "root"
        _record(ctx)
        _running[ctx.instance_id] = now = _running.get(ctx.instance_id, 0) + 1
        try:
            if ctx.task_name == "level1" and params.get("nested") and ctx.task % 2 == 0:
                await ctx.map_async([-(ctx.task * 10 + 1), -(ctx.task * 10 + 2)], "level2")
            if params.get("sleep"):
                await asyncio.sleep(float(params["sleep"]))
        finally:
            _running[ctx.instance_id] -= 1
        return f"{ctx.task}|{os.getpid()}|{now}"

    def reduce(self, ctx: JobContext) -> str:
        values: list[int] = []
        peaks: dict[str, int] = {}
        for task_id, result in ctx.task_results.items():
            if task_id == 0 or ctx.task_statuses[task_id] is not TaskStatus.SUCCESS:
                continue
            value, pid, running = result.split("|")
            values.append(int(value))
            peaks[pid] = max(peaks.get(pid, 0), int(running))
        return json.dumps(
            {"count": len(values), "distinct": len(set(values)), "sum": sum(values), "peaks": peaks}
        )


async def main() -> None:
    worker = Worker(WorkerSettings(), registry=registry)
    worker.alive_interval = float(os.environ.get("E2E_ALIVE_INTERVAL", "0.5"))
    worker.progress_interval = 0.5
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, lambda: loop.create_task(worker.shutdown(grace=2.0)))
    await worker.run()


if __name__ == "__main__":
    import uvloop

    uvloop.run(main())
