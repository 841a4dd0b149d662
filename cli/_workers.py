"""``sx-worker workers``: the workers of a group connected to the scheduler now."""

from __future__ import annotations

import click

from sx.cli._listing import fetch_page, listing_options, print_table
from sx.worker.openapi import WorkerPage

__all__ = ["workers"]


@click.command()
@listing_options
def workers(
    server_url: str,
    namespace: str,
    group_id: str,
    access_key_id: str | None,
    access_key_secret: str | None,
    page_num: int,
    page_size: int,
    output: str,
    timeout: float,
) -> None:
    """List the group's workers connected to the scheduler (draining ones included)."""
    page: WorkerPage = fetch_page(
        "workers",
        lambda client: client.list_workers(page_num=page_num, page_size=page_size),
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
            w.worker_id,
            w.address,
            w.capacity or "-",
            w.running,
            w.assigned,
            w.last_heartbeat,
            "yes" if w.draining else "no",
            w.version,
            ",".join(w.processors) or "-",
        )
        for w in page.workers
    ]
    print_table(
        ("WORKER", "ADDRESS", "CAPACITY", "RUNNING", "ASSIGNED", "LAST HEARTBEAT", "DRAINING", "VERSION",
         "PROCESSORS"),
        rows,
        footer=f"{len(rows)} of {page.total} workers in {namespace}/{group_id} (page {page.page_num})",
    )  # fmt: skip
