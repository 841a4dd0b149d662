"""``sx-worker alarms``: a group's alarm history, newest first, with whether each was delivered."""

from __future__ import annotations

import click

from sx.cli._listing import fetch_page, listing_options, print_table
from sx.worker.openapi import AlarmPage

__all__ = ["alarms"]


@click.command()
@listing_options
@click.option("--job-id", type=click.IntRange(min=1), default=None, help="Only this job's alarms.")
@click.option(
    "--since", default=None, help="Raised from: yyyy-MM-dd HH:mm:ss (the scheduler's zone) or epoch ms."
)
@click.option(
    "--until", default=None, help="Raised until: yyyy-MM-dd HH:mm:ss (the scheduler's zone) or epoch ms."
)
@click.option(
    "--delivered/--undelivered", default=None, help="Only the delivered alarms, or only the undelivered ones."
)
def alarms(
    server_url: str,
    namespace: str,
    group_id: str,
    access_key_id: str | None,
    access_key_secret: str | None,
    page_num: int,
    page_size: int,
    output: str,
    timeout: float,
    job_id: int | None,
    since: str | None,
    until: str | None,
    delivered: bool | None,
) -> None:
    """List the group's alarms (failures and timeouts) and how each delivery went."""
    page: AlarmPage = fetch_page(
        "alarms",
        lambda client: client.list_alarms(
            job_id=job_id,
            start_time=since,
            end_time=until,
            delivered=delivered,
            page_num=page_num,
            page_size=page_size,
        ),
        server_url=server_url,
        namespace=namespace,
        group_id=group_id,
        access_key_id=access_key_id,
        access_key_secret=access_key_secret,
        timeout=timeout,
    )
    if output == "json":
        click.echo(page.model_dump_json(by_alias=True, indent=2))
        return
    rows = [
        (
            a.time,
            a.job_id,
            a.instance_id if a.instance_id is not None else "-",
            a.kind,
            a.channel,
            "delivered" if a.delivered else f"not delivered: {a.error}",
        )
        for a in page.alarms
    ]
    print_table(
        ("TIME", "JOB", "INSTANCE", "KIND", "CHANNEL", "OUTCOME"),
        rows,
        footer=f"{len(rows)} of {page.total} alarms in {namespace}/{group_id} (page {page.page_num})",
    )
