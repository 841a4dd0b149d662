"""``sx-worker instances``: list, show, stop and watch a job's instances through the OpenAPI
(``instances rerun`` is a re-run verb: see ``sx.cli._backfill``).

JOB is a job id or a job's name. Exit codes are those of the operator verbs (see ``sx.cli._api``);
``watch`` also exits 1 when the instance ends in another state than SUCCESS.
"""

from __future__ import annotations

import click

from sx.cli._api import Api, api_options, output_option, print_json, resolve_job
from sx.cli._listing import print_table
from sx.cli._support import ExitCode
from sx.cli._watch import pick_display, take_snapshot, watch_instance
from sx.processors import InstanceStatus
from sx.worker.openapi import MAX_PAGE_SIZE, InstanceDetail, InstancePage, OpenApiClient

__all__ = ["instances"]

_STATUS_NAMES = {status.name.lower(): status for status in InstanceStatus}


def _statuses(_ctx: click.Context, param: click.Parameter, value: str | None) -> list[InstanceStatus]:
    if not value:
        return []
    found = []
    for name in value.split(","):
        status = _STATUS_NAMES.get(name.strip().lower())
        if status is None:
            raise click.BadParameter(f"{name!r}: one of {', '.join(_STATUS_NAMES)}", param=param)
        found.append(status)
    return found


@click.group()
def instances() -> None:
    """A job's instances (JOB is an id or a name)."""


@instances.command(name="list")
@api_options
@output_option
@click.argument("job")
@click.option("--status", "statuses", callback=_statuses, help="Only these, e.g. running,failed.")
@click.option("--since", default=None, help="Scheduled from: yyyy-MM-dd HH:mm:ss in the job's zone.")
@click.option("--until", default=None, help="Scheduled until: yyyy-MM-dd HH:mm:ss in the job's zone.")
@click.option("--page", "page_num", type=click.IntRange(min=1), default=1, help="From 1.")
@click.option("--page-size", type=click.IntRange(1, MAX_PAGE_SIZE), default=20, help="Rows a page.")
def list_instances(
    api: Api,
    output: str,
    job: str,
    statuses: list[InstanceStatus],
    since: str | None,
    until: str | None,
    page_num: int,
    page_size: int,
) -> None:
    """List JOB's instances, newest first."""

    async def fetch(client: OpenApiClient) -> InstancePage:
        return await client.list_instances(
            await resolve_job(client, job),
            statuses=statuses,
            start_time=since,
            end_time=until,
            page_num=page_num,
            page_size=page_size,
        )

    page = api.run(f"listing instances of job {job}", fetch)
    if output == "json":
        print_json(page)
        return
    rows = [
        (i.instance_id, i.status.name, i.schedule_date, i.start_date, i.end_date, i.work_addr, i.result[:60])
        for i in page.instances
    ]
    print_table(
        ("INSTANCE", "STATUS", "SCHEDULED", "STARTED", "ENDED", "WORKER", "RESULT"),
        rows,
        footer=f"{len(rows)} of {page.total} instances of job {job} (page {page.page_num})",
    )


@instances.command(name="get")
@api_options
@output_option
@click.argument("job")
@click.argument("instance_id", type=click.IntRange(min=1))
def get_instance(api: Api, output: str, job: str, instance_id: int) -> None:
    """Show one instance, with per-task-name counts for a map job."""

    async def fetch(client: OpenApiClient) -> list[str]:
        job_id = await resolve_job(client, job)
        info = await client.get_job(job_id)
        snapshot = await take_snapshot(client, job_id, instance_id, map_job=info.spec.execute_mode.is_map)
        if output == "json":
            payload = snapshot.instance.model_dump(mode="json", by_alias=True)
            if snapshot.tasks:
                payload["tasks"] = [
                    {"taskName": t.name, "total": t.total, "done": t.done, "failed": t.failed,
                     "running": t.running}
                    for t in snapshot.tasks
                ]  # fmt: skip
            print_json(payload)
            return []
        return snapshot.lines()

    for line in api.run(f"instance {instance_id} of job {job}", fetch):
        click.echo(line)


@instances.command(name="stop")
@api_options
@output_option
@click.argument("job")
@click.argument("instance_id", type=click.IntRange(min=1))
def stop_instance(api: Api, output: str, job: str, instance_id: int) -> None:
    """Stop a running instance (its workers are told to cancel it)."""

    async def stop(client: OpenApiClient) -> int:
        job_id = await resolve_job(client, job)
        await client.stop_instance(job_id, instance_id)
        return job_id

    job_id = api.run(f"stopping instance {instance_id} of job {job}", stop)
    if output == "json":
        print_json({"jobId": job_id, "instanceId": instance_id, "action": "stop"})
    else:
        click.echo(f"instance {instance_id} of job {job_id}: stop requested")


@instances.command(name="watch")
@api_options
@output_option
@click.argument("job")
@click.argument("instance_id", type=click.IntRange(min=1))
@click.option("--interval", type=click.FloatRange(min=0.1), default=1.0, help="Seconds between two looks.")
@click.option("--plain", is_flag=True, help="Plain lines even on a terminal.")
def watch(api: Api, output: str, job: str, instance_id: int, interval: float, plain: bool) -> None:
    """Follow an instance until it ends: its state, and for a map job the progress of each task name.
    Exits 0 when it succeeded, 1 otherwise; with --output json, prints its final state only."""

    async def follow(client: OpenApiClient) -> InstanceDetail:
        job_id = await resolve_job(client, job)
        display = _Silent() if output == "json" else pick_display(plain)
        return await watch_instance(client, job_id, instance_id, interval=interval, display=display)

    final = api.run(f"watching instance {instance_id} of job {job}", follow)
    if output == "json":
        print_json(final)
    if final.status != InstanceStatus.SUCCESS:
        raise SystemExit(int(ExitCode.FAILED))


class _Silent:
    def show(self, snapshot: object) -> None:
        pass

    def close(self) -> None:
        pass
