"""``instances watch``: follow one instance until it ends, with per-task-name progress for map jobs.

On a terminal the display is a live ``rich`` table redrawn in place; elsewhere (a pipe, a log file, CI)
a line is printed whenever something changed, so the output stays readable as plain text.
"""

from __future__ import annotations

import asyncio
import sys
from collections import Counter
from dataclasses import dataclass
from typing import Any, Protocol

import click

from sx.processors import InstanceStatus, TaskStatus
from sx.worker.openapi import MAX_PAGE_SIZE, InstanceDetail, OpenApiClient

__all__ = ["PlainDisplay", "Snapshot", "TaskTally", "pick_display", "take_snapshot", "watch_instance"]


@dataclass(frozen=True)
class TaskTally:
    """How the subtasks of one task name stand."""

    name: str
    total: int
    done: int
    failed: int
    running: int

    def line(self) -> str:
        return (
            f"  {self.name}: {self.done + self.failed}/{self.total} finished "
            f"({self.failed} failed, {self.running} running)"
        )


@dataclass(frozen=True)
class Snapshot:
    instance: InstanceDetail
    tasks: tuple[TaskTally, ...] = ()

    def lines(self) -> list[str]:
        i = self.instance
        head = f"instance {i.instance_id} of job {i.job_id}: {i.status.name}"
        if i.work_addr:
            head += f" on {i.work_addr}"
        if i.progress:
            head += f" ({i.progress})"
        lines = [head, *(tally.line() for tally in self.tasks)]
        if i.status.finished and i.result:
            lines.append(f"  result: {i.result}")
        return lines


async def take_snapshot(client: OpenApiClient, job_id: int, instance_id: int, *, map_job: bool) -> Snapshot:
    """The instance now, and for a map job its subtasks counted by task name."""
    instance = await client.get_instance(job_id, instance_id)
    if not map_job:
        return Snapshot(instance)
    counts: dict[str, Counter[TaskStatus]] = {}
    page_num = 1
    while True:
        page = await client.list_instance_tasks(
            job_id, instance_id, page_num=page_num, page_size=MAX_PAGE_SIZE
        )
        for task in page.tasks:
            counts.setdefault(task.task_name, Counter())[task.status] += 1
        if not page.tasks or page_num * page.page_size >= page.total:
            break
        page_num += 1
    tallies = tuple(
        TaskTally(
            name=name,
            total=sum(c.values()),
            done=c[TaskStatus.SUCCESS],
            failed=c[TaskStatus.FAILED],
            running=c[TaskStatus.RUNNING] + c[TaskStatus.PULLED],
        )
        for name, c in counts.items()
    )
    return Snapshot(instance, tallies)


class Display(Protocol):
    def show(self, snapshot: Snapshot) -> None: ...

    def close(self) -> None: ...


class PlainDisplay:
    """Prints the snapshot's lines whenever they changed."""

    def __init__(self) -> None:
        self._last: list[str] = []

    def show(self, snapshot: Snapshot) -> None:
        lines = snapshot.lines()
        if lines != self._last:
            for line in lines:
                click.echo(line)
            self._last = lines

    def close(self) -> None:
        pass


class RichDisplay:
    """A live table redrawn in place: the instance's state, then a bar per task name."""

    def __init__(self) -> None:
        from rich.live import Live

        self._live = Live(refresh_per_second=4, transient=False)
        self._live.start()

    def show(self, snapshot: Snapshot) -> None:
        self._live.update(self._render(snapshot))

    @staticmethod
    def _render(snapshot: Snapshot) -> Any:
        from rich.console import Group
        from rich.progress_bar import ProgressBar
        from rich.table import Table
        from rich.text import Text

        head, *_ = snapshot.lines()
        if not snapshot.tasks:
            return Text(head)
        table = Table(box=None, show_header=True, header_style="bold")
        for column in ("TASK", "", "FINISHED", "FAILED", "RUNNING"):
            table.add_column(column)
        for tally in snapshot.tasks:
            finished = tally.done + tally.failed
            table.add_row(
                tally.name,
                ProgressBar(total=max(tally.total, 1), completed=finished, width=30),
                f"{finished}/{tally.total}",
                str(tally.failed),
                str(tally.running),
            )
        return Group(Text(head), table)

    def close(self) -> None:
        self._live.stop()


def pick_display(plain: bool) -> Display:
    """The rich display on a terminal when rich is installed, plain lines otherwise."""
    if not plain and sys.stdout.isatty():
        try:
            return RichDisplay()
        except ImportError:
            pass
    return PlainDisplay()


async def watch_instance(
    client: OpenApiClient, job_id: int, instance_id: int, *, interval: float, display: Display
) -> InstanceDetail:
    """Show the instance every ``interval`` seconds until it has finished; its final state."""
    job = await client.get_job(job_id)
    map_job = job.spec.execute_mode.is_map
    try:
        while True:
            snapshot = await take_snapshot(client, job_id, instance_id, map_job=map_job)
            display.show(snapshot)
            if InstanceStatus(snapshot.instance.status).finished:
                return snapshot.instance
            await asyncio.sleep(interval)
    finally:
        display.close()
