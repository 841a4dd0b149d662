"""``sx-worker workflows``: list a group's workflows, trigger one, and list its instances.

WORKFLOW is a workflow id or a workflow's name. Exit codes are those of the operator verbs (see
``sx.cli._api``).
"""

from __future__ import annotations

from typing import Any

import click

from sx.cli._api import Api, api_options, output_option, print_json
from sx.cli._listing import print_table
from sx.worker.openapi import MAX_PAGE_SIZE, NotFoundError, OpenApiClient, WorkflowInfo

__all__ = ["workflows"]


async def _resolve_workflow(client: OpenApiClient, workflow: str) -> int:
    if workflow.isdigit():
        return int(workflow)
    found = await client.find_workflow(workflow)
    if found is None:
        raise NotFoundError(f"no workflow named {workflow!r} in group {client.group_id!r}")
    return found.workflow_id


def _workflow_payload(info: WorkflowInfo) -> dict[str, Any]:
    return {
        "workflowId": info.workflow_id,
        "name": info.name,
        "status": 1 if info.enabled else 0,
        "managed": info.managed,
        "nodes": list(info.nodes),
        "edges": [list(edge) for edge in info.edges],
        "jobs": [{"jobId": job_id, "name": name} for job_id, name in info.job_names.items()],
    }


@click.group()
def workflows() -> None:
    """The group's workflows (WORKFLOW is an id or a name)."""


@workflows.command(name="list")
@api_options
@output_option
@click.option("--page", "page_num", type=click.IntRange(min=1), default=1, help="From 1.")
@click.option("--page-size", type=click.IntRange(1, MAX_PAGE_SIZE), default=20, help="Rows a page.")
def list_workflows(api: Api, output: str, page_num: int, page_size: int) -> None:
    """List the group's workflows."""
    total, found = api.run(
        "listing workflows", lambda client: client.list_workflows(page_num=page_num, page_size=page_size)
    )
    if output == "json":
        payload = {"total": total, "pageNum": page_num, "pageSize": page_size}
        print_json({**payload, "workflows": [_workflow_payload(w) for w in found]})
        return
    rows = [
        (w.workflow_id, w.name, "enabled" if w.enabled else "disabled", len(w.nodes), len(w.edges))
        for w in found
    ]
    print_table(
        ("ID", "NAME", "STATUS", "JOBS", "EDGES"),
        rows,
        footer=f"{len(rows)} of {total} workflows in {api.namespace}/{api.group_id} (page {page_num})",
    )


@workflows.command(name="execute")
@api_options
@output_option
@click.argument("workflow")
@click.option("--parameters", "instance_parameters", default="", help="The instance's parameters.")
def execute_workflow(api: Api, output: str, workflow: str, instance_parameters: str) -> None:
    """Trigger WORKFLOW once now; prints the new workflow instance's id."""

    async def execute(client: OpenApiClient) -> tuple[int, int]:
        workflow_id = await _resolve_workflow(client, workflow)
        return workflow_id, await client.execute_workflow(workflow_id, instance_parameters)

    workflow_id, wf_instance_id = api.run(f"executing workflow {workflow}", execute)
    if output == "json":
        print_json({"workflowId": workflow_id, "wfInstanceId": wf_instance_id})
    else:
        click.echo(f"workflow {workflow_id}: instance {wf_instance_id} started")


@workflows.command(name="instances")
@api_options
@output_option
@click.argument("workflow")
@click.option("--page", "page_num", type=click.IntRange(min=1), default=1, help="From 1.")
@click.option("--page-size", type=click.IntRange(1, MAX_PAGE_SIZE), default=20, help="Rows a page.")
def workflow_instances(api: Api, output: str, workflow: str, page_num: int, page_size: int) -> None:
    """List WORKFLOW's instances, newest first."""

    async def fetch(client: OpenApiClient) -> Any:
        workflow_id = await _resolve_workflow(client, workflow)
        return await client.list_workflow_instances(workflow_id, page_num=page_num, page_size=page_size)

    page = api.run(f"listing instances of workflow {workflow}", fetch)
    if output == "json":
        print_json(page)
        return
    rows = [
        (i.wf_instance_id, i.status.name, i.schedule_date, i.end_date, i.result[:60]) for i in page.instances
    ]
    print_table(
        ("INSTANCE", "STATUS", "SCHEDULED", "ENDED", "RESULT"),
        rows,
        footer=f"{len(rows)} of {page.total} instances of workflow {workflow} (page {page.page_num})",
    )
