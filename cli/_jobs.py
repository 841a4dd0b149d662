"""``sx-worker jobs``: list, show, trigger, enable, disable and delete a group's jobs through the OpenAPI.

JOB is a job id or a job's name. Exit codes are those of the operator verbs (see ``sx.cli._api``).
"""

from __future__ import annotations

import click

from sx.cli._api import Api, api_options, job_payload, output_option, print_json, resolve_job
from sx.cli._listing import print_table
from sx.worker.openapi import MAX_PAGE_SIZE, JobInfo, JobPage, OpenApiClient

__all__ = ["jobs"]


@click.group()
def jobs() -> None:
    """The group's jobs (JOB is an id or a name)."""


@jobs.command(name="list")
@api_options
@output_option
@click.option("--name-contains", default=None, help="Only jobs whose name contains this.")
@click.option("--page", "page_num", type=click.IntRange(min=1), default=1, help="From 1.")
@click.option("--page-size", type=click.IntRange(1, MAX_PAGE_SIZE), default=20, help="Rows a page.")
def list_jobs(api: Api, output: str, name_contains: str | None, page_num: int, page_size: int) -> None:
    """List the group's jobs, by id."""
    page: JobPage = api.run(
        "listing jobs",
        lambda client: client.list_jobs(name_contains=name_contains, page_num=page_num, page_size=page_size),
    )
    if output == "json":
        print_json(
            {
                "total": page.total,
                "pageNum": page.page_num,
                "pageSize": page.page_size,
                "jobs": [job_payload(job) for job in page.jobs],
            }
        )
        return
    rows = [
        (
            job.job_id,
            job.name,
            "enabled" if job.enabled else "disabled",
            job.spec.execute_mode.value,
            f"{job.spec.schedule.time_type.name.lower()} {job.spec.schedule.expression}".strip(),
            "yes" if job.managed else "no",
        )
        for job in page.jobs
    ]
    print_table(
        ("ID", "NAME", "STATUS", "MODE", "SCHEDULE", "MANAGED"),
        rows,
        footer=f"{len(rows)} of {page.total} jobs in {api.namespace}/{api.group_id} (page {page.page_num})",
    )


@jobs.command(name="get")
@api_options
@output_option
@click.argument("job")
def get_job(api: Api, output: str, job: str) -> None:
    """Show one job's definition and state."""

    async def get(client: OpenApiClient) -> JobInfo:
        return await client.get_job(await resolve_job(client, job))

    info = api.run(f"job {job}", get)
    payload = job_payload(info)
    if output == "json":
        print_json(payload)
        return
    for key, value in payload.items():
        click.echo(f"{key}: {value}")


@jobs.command(name="execute")
@api_options
@output_option
@click.argument("job")
@click.option("--parameters", "instance_parameters", default="", help="The instance's parameters.")
def execute_job(api: Api, output: str, job: str, instance_parameters: str) -> None:
    """Trigger JOB once now; prints the new instance's id (follow it with ``instances watch``)."""

    async def execute(client: OpenApiClient) -> tuple[int, int]:
        job_id = await resolve_job(client, job)
        return job_id, await client.execute_job(job_id, instance_parameters)

    job_id, instance_id = api.run(f"executing job {job}", execute)
    if output == "json":
        print_json({"jobId": job_id, "instanceId": instance_id})
    else:
        click.echo(f"job {job_id}: instance {instance_id} started")


def _state_verb(name: str, done: str) -> click.Command:
    """``enable``, ``disable`` and ``delete``: one call on one job."""

    @api_options
    @output_option
    @click.argument("job")
    def command(api: Api, output: str, job: str) -> None:
        async def act(client: OpenApiClient) -> int:
            job_id = await resolve_job(client, job)
            await getattr(client, f"{name}_job")(job_id)
            return job_id

        job_id = api.run(f"{name} job {job}", act)
        if output == "json":
            print_json({"jobId": job_id, "action": name})
        else:
            click.echo(f"job {job_id} {done}")

    command.__doc__ = f"{name.capitalize()} JOB."
    return click.command(name=name)(command)


for _name, _done in (("enable", "enabled"), ("disable", "disabled"), ("delete", "deleted")):
    jobs.add_command(_state_verb(_name, _done))
