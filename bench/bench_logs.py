"""The cost of online instance logs: a grid job whose subtasks each log one line through ``ctx.logger``
against the same job logging nothing, in the same run.

    .venv/bin/python bench/bench_logs.py [--tasks 100000] [--repeat 4]

A ``sx-worker serve`` scheduler (SQLite, keeping every line: ``SX_INSTANCE_LOG_LINES`` above the line
count) and 2 ``sx-worker run`` workers (``--log-level warning``, so the lines are shipped but not also
written to the workers' stderr). Each round runs both jobs, the quiet one first in odd rounds and the
logging one first in even rounds (so neither always runs first); each run is printed, and the
summary gives the medians, the ratio logging / quiet (the target is at most 1.15),
the lines stored per second (from ExecuteJob to the last line stored; lines a full buffer dropped are
counted by their "N lines dropped" line, and each run says how many), and the scheduler's RSS before
the first run and after each run.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import tempfile
import time
from pathlib import Path

from _cluster import GROUP, NS, cluster

from sx.processors import ExecuteMode, JobContext, JobSpec, MapOptions, MapProcessor, processor
from sx.worker import SyncOpenApiClient

_DROPPED = re.compile(r"(\d+) lines dropped")

CONSUMER_SIZE, QUEUE_SIZE, DISPATCHER_SIZE, PAGE_SIZE = 64, 20_000, 4, 100


@processor(name="bench.logs.grid", mode="grid")
class OneLinePerSubtask(MapProcessor):
    """Job parameters ``N,LOG``: the root maps N subtasks; each logs one line when LOG is 1."""

    async def process(self, ctx: JobContext) -> object:
        count, log = (int(part) for part in ctx.job_parameters.split(","))
        if ctx.is_root_task:
            for start in range(0, count, 1000):
                await ctx.map_async(list(range(start, min(count, start + 1000))), "sub")
        elif log:
            ctx.logger.info("subtask %d done", ctx.task)
        return None


def _cpu_seconds(pid: int) -> float:
    """User plus system CPU of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _wait_stored(api: SyncOpenApiClient, job_id: int, instance_id: int, tasks: int) -> int:
    """Wait until every line of the run is stored, or counted in a stored "N lines dropped" line (a
    buffer that overflowed); returns the lines dropped."""
    while True:
        notes = api.get_instance_log(job_id, instance_id, level="WARNING", limit=1000).lines
        counts = [int(found.group(1)) for note in notes if (found := _DROPPED.match(note.message))]
        # Lines are numbered from 1 per instance: the last one is the lines kept plus the notes.
        last = tasks - sum(counts) + len(counts)
        if api.get_instance_log(job_id, instance_id, offset=last - 1, limit=1).lines:
            return sum(counts)
        time.sleep(0.02)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=4)
    args = parser.parse_args()
    tasks = args.tasks
    scheduler_env = {"SX_INSTANCE_LOG_LINES": str(tasks * 2)}
    with (
        tempfile.TemporaryDirectory() as tmp,
        cluster(Path(tmp), "bench_logs", scheduler_env=scheduler_env) as sx,
    ):
        scheduler_pid = sx.procs[0].pid
        with SyncOpenApiClient(sx.base_url, namespace=NS, group_id=GROUP, timeout=60) as api:
            while len(api.list_workers().workers) < 2:
                time.sleep(0.05)
            options = MapOptions(
                page_size=PAGE_SIZE,
                consumer_size=CONSUMER_SIZE,
                queue_size=QUEUE_SIZE,
                dispatcher_size=DISPATCHER_SIZE,
            )
            jobs = {
                logging: api.create_job(
                    JobSpec(
                        name=f"bench-logs-{int(logging)}",
                        class_name="bench.logs.grid",
                        execute_mode=ExecuteMode.GRID,
                        parameters=f"{tasks},{int(logging)}",
                        map=options,
                    )
                )
                for logging in (False, True)
            }
            rss = [_rss_mb(scheduler_pid)]
            print(f"{tasks:,} grid subtasks, 2 workers; scheduler RSS before: {rss[0]:.0f} MB", flush=True)
            seconds: dict[bool, list[float]] = {False: [], True: []}
            stored_rates: list[float] = []
            for round_ in range(1, args.repeat + 1):
                # The order alternates, so neither job always runs first (after a pause) or second.
                for logging in (False, True) if round_ % 2 else (True, False):
                    job_id = jobs[logging]
                    cpu_before = [_cpu_seconds(proc.pid) for proc in sx.procs]
                    started = time.perf_counter()
                    instance_id = api.execute_job(job_id)
                    while not (detail := api.get_instance(job_id, instance_id)).status.finished:
                        time.sleep(0.02)
                    elapsed = time.perf_counter() - started
                    if detail.status.name != "SUCCESS":
                        raise SystemExit(f"run failed: {detail.result}")
                    seconds[logging].append(elapsed)
                    line = ""
                    if logging:
                        dropped = _wait_stored(api, job_id, instance_id, tasks)
                        stored = time.perf_counter() - started
                        stored_rates.append((tasks - dropped) / stored)
                        line = f"; all {tasks:,} lines stored after {stored:.2f}s"
                        if dropped:
                            line += f" ({dropped:,} of them as dropped-lines counts)"
                    rss.append(_rss_mb(scheduler_pid))
                    cpu = [
                        _cpu_seconds(proc.pid) - before
                        for proc, before in zip(sx.procs, cpu_before, strict=True)
                    ]
                    line += f"; CPU s scheduler {cpu[0]:.2f}, workers " + " / ".join(
                        f"{c:.2f}" for c in cpu[1:]
                    )
                    kind = "one line each" if logging else "no logging  "
                    print(
                        f"  round {round_}, {kind}: {elapsed:.2f}s ({tasks / elapsed:,.0f} subtasks/s)"
                        f"{line}; scheduler RSS {rss[-1]:.0f} MB",
                        flush=True,
                    )
    quiet, logged = statistics.median(seconds[False]), statistics.median(seconds[True])
    print(f"median without logging: {quiet:.2f}s; with one line per subtask: {logged:.2f}s")
    print(f"ratio logging / quiet: {logged / quiet:.3f} (target at most 1.15)")
    print(f"lines stored per second (median): {statistics.median(stored_rates):,.0f}")
    print(f"scheduler RSS: {rss[0]:.0f} MB before, {rss[-1]:.0f} MB after, {max(rss):.0f} MB at most")


if __name__ == "__main__":
    main()
