"""Re-run verbs: ``sx-worker instances rerun`` (an instance run again), ``sx-worker workflows rerun`` (a
workflow instance run again), ``sx-worker jobs backfill`` (a job run again for every fire time of a
past range; ``workflows backfill`` likewise), with ``jobs backfills`` to follow them and ``jobs
backfill-stop`` to stop one.

The commands are attached to the ``instances``, ``workflows`` and ``jobs`` groups by ``_main``. JOB
is a job id or a job's name; dates are ``yyyy-MM-dd HH:mm:ss`` in the job's zone (or epoch
milliseconds). Exit codes are those of the operator verbs (see ``sx.cli._api``).
"""

from __future__ import annotations

import click

from sx.cli._api import Api, api_options, output_option, print_json, resolve_job
from sx.cli._listing import print_table
from sx.worker.openapi import (
    MAX_PAGE_SIZE,
    BackfillInfo,
    BackfillPage,
    BackfillPlanInfo,
    NotFoundError,
    OpenApiClient,
)

__all__ = ["backfill", "backfill_stop", "backfills", "rerun", "rerun_workflow", "workflow_backfill"]


@click.command()
@api_options
@output_option
@click.argument("job")
@click.argument("instance_id", type=click.IntRange(min=1))
def rerun(api: Api, output: str, job: str, instance_id: int) -> None:
    """Run a finished instance of JOB again (trigger type 4, same parameters, schedule and data time)."""

    async def call(client: OpenApiClient) -> tuple[int, int]:
        job_id = await resolve_job(client, job)
        return job_id, await client.rerun_instance(job_id, instance_id)

    job_id, new_id = api.run(f"re-running instance {instance_id} of job {job}", call)
    if output == "json":
        print_json({"jobId": job_id, "instanceId": new_id, "rerunOf": instance_id})
        return
    click.echo(f"instance {new_id} of job {job_id} re-runs instance {instance_id}")


@click.command(name="rerun")
@api_options
@output_option
@click.argument("wf_instance_id", type=click.IntRange(min=1))
def rerun_workflow(api: Api, output: str, wf_instance_id: int) -> None:
    """Run a finished workflow instance again, whole (trigger type 4, its schedule and data time)."""
    new_id = api.run(
        f"re-running workflow instance {wf_instance_id}",
        lambda client: client.rerun_workflow_instance(wf_instance_id),
    )
    if output == "json":
        print_json({"wfInstanceId": new_id, "rerunOf": wf_instance_id})
        return
    click.echo(f"workflow instance {new_id} re-runs workflow instance {wf_instance_id}")


@click.command()
@api_options
@output_option
@click.argument("job")
@click.option("--from", "start", required=True, help="First data time: yyyy-MM-dd HH:mm:ss (job's zone).")
@click.option("--to", "end", required=True, help="Last data time, inclusive: yyyy-MM-dd HH:mm:ss.")
@click.option("--concurrency", type=click.IntRange(1, 1000), default=1, help="Instances running at once.")
@click.option("--skip-successful", is_flag=True, help="Skip data times that already succeeded.")
@click.option("--max-fire-times", type=click.IntRange(min=1), default=None, help="Refuse a larger range.")
@click.option("--instance-parameters", default="", help="The instances' instance parameters.")
@click.option("--dry-run", is_flag=True, help="Print the fire times it would run; create nothing.")
def backfill(
    api: Api,
    output: str,
    job: str,
    start: str,
    end: str,
    concurrency: int,
    skip_successful: bool,
    max_fire_times: int | None,
    instance_parameters: str,
    dry_run: bool,
) -> None:
    """Run JOB again for every fire time whose data time lies in [--from, --to], in schedule order."""
    if dry_run:

        async def plan(client: OpenApiClient) -> BackfillPlanInfo:
            job_id = await resolve_job(client, job)
            return await client.plan_backfill(
                job_id, start, end, skip_successful=skip_successful, max_fire_times=max_fire_times
            )

        _print_plan(api.run(f"planning a backfill of job {job}", plan), output)
        return

    async def create(client: OpenApiClient) -> BackfillInfo:
        job_id = await resolve_job(client, job)
        return await client.backfill_job(
            job_id,
            start,
            end,
            concurrency=concurrency,
            skip_successful=skip_successful,
            max_fire_times=max_fire_times,
            instance_parameters=instance_parameters,
        )

    _print_created(api.run(f"backfilling job {job}", create), output)


def _print_plan(planned: BackfillPlanInfo, output: str) -> None:
    if output == "json":
        print_json(planned)
        return
    for fire in planned.fire_times:
        click.echo(f"{fire.schedule_date}{'  (skip: already succeeded)' if fire.skip else ''}")
    listed = len(planned.fire_times)
    shown = "" if listed == planned.total else f" (first {listed} shown)"
    click.echo(f"{planned.total} fire times, {planned.skipped} skipped{shown}")


def _print_created(created: BackfillInfo, output: str) -> None:
    if output == "json":
        print_json(created)
        return
    target = f"job {created.job_id}" if created.job_id is not None else f"workflow {created.workflow_id}"
    click.echo(
        f"backfill {created.backfill_id} of {target}: {created.total} fire times "
        f"({created.skipped} skipped), {created.concurrency} at a time"
    )


async def _resolve_workflow(client: OpenApiClient, workflow: str) -> int:
    if workflow.isdigit():
        return int(workflow)
    found = await client.find_workflow(workflow)
    if found is None:
        raise NotFoundError(f"no workflow named {workflow!r} in group {client.group_id!r}")
    return found.workflow_id


@click.command(name="backfill")
@api_options
@output_option
@click.argument("workflow")
@click.option("--from", "start", required=True, help="First fire time: yyyy-MM-dd HH:mm:ss (its zone).")
@click.option("--to", "end", required=True, help="Last fire time, inclusive: yyyy-MM-dd HH:mm:ss.")
@click.option("--concurrency", type=click.IntRange(1, 1000), default=1, help="Workflow instances at once.")
@click.option("--skip-successful", is_flag=True, help="Skip fire times that already succeeded.")
@click.option("--max-fire-times", type=click.IntRange(min=1), default=None, help="Refuse a larger range.")
@click.option("--instance-parameters", default="", help="The root nodes' instance parameters.")
@click.option("--dry-run", is_flag=True, help="Print the fire times it would run; create nothing.")
def workflow_backfill(
    api: Api,
    output: str,
    workflow: str,
    start: str,
    end: str,
    concurrency: int,
    skip_successful: bool,
    max_fire_times: int | None,
    instance_parameters: str,
    dry_run: bool,
) -> None:
    """Run WORKFLOW (an id or a name) again for every fire time in [--from, --to], each instance's
    nodes for the data time of its fire."""

    async def plan(client: OpenApiClient) -> BackfillPlanInfo:
        workflow_id = await _resolve_workflow(client, workflow)
        return await client.plan_workflow_backfill(
            workflow_id, start, end, skip_successful=skip_successful, max_fire_times=max_fire_times
        )

    async def create(client: OpenApiClient) -> BackfillInfo:
        workflow_id = await _resolve_workflow(client, workflow)
        return await client.backfill_workflow(
            workflow_id,
            start,
            end,
            concurrency=concurrency,
            skip_successful=skip_successful,
            max_fire_times=max_fire_times,
            instance_parameters=instance_parameters,
        )

    if dry_run:
        _print_plan(api.run(f"planning a backfill of workflow {workflow}", plan), output)
    else:
        _print_created(api.run(f"backfilling workflow {workflow}", create), output)


@click.command()
@api_options
@output_option
@click.option("--job", default=None, help="Only this job's backfills (an id or a name).")
@click.option("--page", "page_num", type=click.IntRange(min=1), default=1, help="From 1.")
@click.option("--page-size", type=click.IntRange(1, MAX_PAGE_SIZE), default=20, help="Rows a page.")
def backfills(api: Api, output: str, job: str | None, page_num: int, page_size: int) -> None:
    """List the group's backfills with their progress, newest first."""

    async def fetch(client: OpenApiClient) -> BackfillPage:
        job_id = await resolve_job(client, job) if job is not None else None
        return await client.list_backfills(job_id=job_id, page_num=page_num, page_size=page_size)

    page = api.run("listing backfills", fetch)
    if output == "json":
        print_json(page)
        return
    rows = [
        (b.backfill_id, b.job_id if b.job_id is not None else f"workflow {b.workflow_id}", b.state,
         b.start_date, b.end_date, b.total, b.pending, b.running, b.done, b.failed, b.skipped)
        for b in page.backfills
    ]  # fmt: skip
    print_table(
        ("ID", "JOB", "STATE", "FROM", "TO", "TOTAL", "PENDING", "RUNNING", "DONE", "FAILED", "SKIPPED"),
        rows,
        footer=f"{len(rows)} of {page.total} backfills in {api.namespace}/{api.group_id} "
        f"(page {page.page_num})",
    )


@click.command(name="backfill-stop")
@api_options
@output_option
@click.argument("backfill_id", type=click.IntRange(min=1))
def backfill_stop(api: Api, output: str, backfill_id: int) -> None:
    """Stop a backfill: none of its pending fire times start (running instances go on to their end)."""
    stopped = api.run(f"stopping backfill {backfill_id}", lambda client: client.stop_backfill(backfill_id))
    if output == "json":
        print_json(stopped)
        return
    click.echo(
        f"backfill {backfill_id} stopped: {stopped.done} done, {stopped.failed} failed, "
        f"{stopped.running} still running, {stopped.pending} not started"
    )
