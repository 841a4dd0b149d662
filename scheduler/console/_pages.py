"""The console's pages (GET): overview, jobs, instances, workflows, workers, alarms.

Each handler reads through ``Services`` (paged in the store, as the OpenAPI pages) and hands plain
values to its template. The ``live`` fragments are what htmx polls to keep a page current.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from sx.processors import ExecuteMode, InstanceStatus, TimeType, TriggerType
from sx.scheduler.api import BadRequest
from sx.scheduler.console._context import PAGE_SIZE, Console, GroupChoice, page_number
from sx.scheduler.console._dag import DagNode, dag_svg
from sx.scheduler.console._format import map_progress
from sx.scheduler.console._session import Visitor
from sx.scheduler.store import Instance, Job

__all__ = [
    "LOG_LINES_PER_POLL",
    "alarms_page",
    "instance_live",
    "instance_log",
    "instance_page",
    "instances_page",
    "job_delete_page",
    "job_edit_page",
    "job_page",
    "jobs_page",
    "overview_page",
    "workers_live",
    "workers_page",
    "workflow_page",
    "workflows_page",
]

log = logging.getLogger("sx.scheduler.console")

LOG_LINES_PER_POLL = 500
OVERVIEW_STATUSES = (
    InstanceStatus.WAITING,
    InstanceStatus.RUNNING,
    InstanceStatus.SUCCESS,
    InstanceStatus.FAILED,
    InstanceStatus.REJECTED,
)
NEXT_FIRES = 5
RECENT_INSTANCES = 10


def _path_int(request: Request, name: str) -> int:
    value: int = request.path_params[name]
    return value


def _pages(total: int) -> int:
    return max(1, (total + PAGE_SIZE - 1) // PAGE_SIZE)


async def overview_page(console: Console, request: Request, visitor: Visitor) -> Response:
    services = console.services
    namespaces = visitor.namespaces([n.id for n in await services.admin.list_namespaces()])
    groups: list[dict[str, Any]] = []
    for namespace in namespaces:
        for group in await services.admin.list_groups(namespace):
            workers = (
                services.workers.connected_workers(namespace, group.group_id)
                if services.workers is not None
                else []
            )
            jobs = await services.jobs.list_jobs(namespace, group.group_id, page_size=1)
            alarms = (
                (await services.alarms.list_alarms(namespace, group.group_id, page_size=5)).items
                if services.alarms is not None
                else []
            )
            day_ago = services.jobs.clock.now() - timedelta(hours=24)
            by_status = {}
            for status in OVERVIEW_STATUSES:
                counted = await services.jobs.list_group_instances(
                    namespace, group.group_id, statuses=[status], since=day_ago, page_size=1
                )
                by_status[status] = counted.total
            failures = await services.jobs.list_group_instances(
                namespace, group.group_id, statuses=[InstanceStatus.FAILED], page_size=5
            )
            groups.append(
                {
                    "namespace": namespace,
                    "group_id": group.group_id,
                    "description": group.description,
                    "workers": len(workers),
                    "draining": sum(1 for w in workers if w.draining),
                    "jobs": jobs.total,
                    "by_status": by_status,
                    "failures": failures.items,
                    "alarms": alarms,
                }
            )
    return console.render(request, visitor, "overview.html", groups=groups, namespaces=namespaces)


def _job_filters(request: Request) -> dict[str, Any]:
    """The jobs list's filters from the query: state, time type and execute mode ("" for any)."""
    state = request.query_params.get("state", "")
    time_text = request.query_params.get("timeType", "")
    mode_text = request.query_params.get("mode", "")
    try:
        time_type = TimeType(int(time_text)) if time_text else None
    except ValueError as exc:
        raise BadRequest("timeType", time_text, "must be 1 (cron), 3, 4 or 100 (api)") from exc
    try:
        mode = ExecuteMode(mode_text) if mode_text else None
    except ValueError as exc:
        raise BadRequest(
            "mode", mode_text, f"must be one of {', '.join(m.value for m in ExecuteMode)}"
        ) from exc
    if state not in ("", "enabled", "disabled"):
        raise BadRequest("state", state, "must be enabled or disabled")
    enabled = None if not state else state == "enabled"
    return {"enabled": enabled, "time_type": time_type, "execute_mode": mode}


async def jobs_page(console: Console, request: Request, visitor: Visitor) -> Response:
    choice = await console.group_choice(request, visitor)
    query = request.query_params.get("q", "").strip()
    filters = _job_filters(request)
    page_num = page_number(request)
    jobs: list[Job] = []
    total = 0
    if choice.chosen:
        page = await console.services.jobs.list_jobs(
            choice.namespace,
            choice.group_id,
            name_contains=query or None,
            **filters,
            page_num=page_num,
            page_size=PAGE_SIZE,
        )
        jobs, total = page.items, page.total
    values: dict[str, Any] = {
        "choice": choice,
        "q": query,
        "filtered": any(v is not None for v in filters.values()),
        "state": request.query_params.get("state", ""),
        "time_type": request.query_params.get("timeType", ""),
        "mode": request.query_params.get("mode", ""),
        "jobs": jobs,
        "total": total,
        "page": page_num,
        "pages": _pages(total),
    }
    template = "_jobs_table.html" if request.headers.get("hx-target") == "jobs-table" else "jobs.html"
    return console.render(request, visitor, template, **values)


def _next_fires(console: Console, job: Job) -> list[datetime]:
    if not job.enabled or job.spec.schedule.time_type == TimeType.API:
        return []
    try:
        return job.spec.schedule.next_fire_times(console.services.jobs.time_zone(job.spec), NEXT_FIRES)
    except Exception:  # an expression the trigger engine would refuse is shown, not fatal to the page
        log.debug("next fire times of job %d", job.id, exc_info=True)
        return []


async def _job(console: Console, request: Request, visitor: Visitor) -> Job:
    namespace = request.path_params["ns"]
    visitor.check_namespace(namespace)
    return await console.services.jobs.get_job(
        namespace, request.path_params["group"], _path_int(request, "job_id")
    )


async def job_page(console: Console, request: Request, visitor: Visitor) -> Response:
    job = await _job(console, request, visitor)
    recent = await console.services.jobs.recent_instances(
        job.namespace, job.group_id, job.id, limit=RECENT_INSTANCES
    )
    template = "_recent_instances.html" if request.headers.get("hx-request") else "job.html"
    return console.render(
        request,
        visitor,
        template,
        job=job,
        definition=job.spec.to_create_params(),
        next_fires=_next_fires(console, job),
        instances=recent,
    )


async def job_edit_page(console: Console, request: Request, visitor: Visitor) -> Response:
    job = await _job(console, request, visitor)
    return console.render(request, visitor, "job_edit.html", job=job, error="")


async def job_delete_page(console: Console, request: Request, visitor: Visitor) -> Response:
    job = await _job(console, request, visitor)
    return console.render(request, visitor, "job_delete.html", job=job)


def _time_filter(request: Request, name: str) -> datetime | None:
    """A ``datetime-local`` field's value (the browser's zone, sent as its UTC offset in ``tz``)."""
    text = request.query_params.get(name, "").strip()
    if not text:
        return None
    offset = request.query_params.get("tz", "0")
    try:
        naive = datetime.fromisoformat(text)
        minutes = int(offset) if offset.lstrip("-").isdigit() else 0
    except ValueError as exc:
        raise BadRequest(name, text, "must be a date and time like 2026-01-31T08:00") from exc
    return naive.replace(tzinfo=timezone(-timedelta(minutes=minutes))) if naive.tzinfo is None else naive


def _codes(request: Request, name: str, kind: type[InstanceStatus] | type[TriggerType]) -> list[Any]:
    """The repeated ``name`` query parameter as enum members (a filter's ticked boxes)."""
    out = []
    for item in request.query_params.getlist(name):
        if item:
            try:
                out.append(kind(int(item)))
            except ValueError as exc:
                raise BadRequest(
                    name, item, f"must be one of {', '.join(str(int(k)) for k in kind)}"
                ) from exc
    return out


async def instances_page(console: Console, request: Request, visitor: Visitor) -> Response:
    """A job's instances (under a job's path), or a group's across its jobs (``/instances``)."""
    job: Job | None = None
    if "job_id" in request.path_params:
        job = await _job(console, request, visitor)
        namespace, group_id, choice = job.namespace, job.group_id, None
    else:
        choice = await console.group_choice(request, visitor)
        namespace, group_id = choice.namespace, choice.group_id
    statuses = _codes(request, "status", InstanceStatus)
    triggers = _codes(request, "trigger", TriggerType)
    since, until = _time_filter(request, "since"), _time_filter(request, "until")
    page_num = page_number(request)
    instances: list[Instance] = []
    total = 0
    if namespace and group_id:
        page = await console.services.jobs.list_group_instances(
            namespace,
            group_id,
            job_id=job.id if job is not None else None,
            statuses=statuses,
            trigger_types=triggers,
            since=since,
            until=until,
            page_num=page_num,
            page_size=PAGE_SIZE,
        )
        instances, total = page.items, page.total
    return console.render(
        request,
        visitor,
        "instances.html",
        job=job,
        choice=choice,
        namespace=namespace,
        group_id=group_id,
        instances=instances,
        total=total,
        page=page_num,
        pages=_pages(total),
        chosen_statuses={int(s) for s in statuses},
        chosen_triggers={int(t) for t in triggers},
        since=request.query_params.get("since", ""),
        until=request.query_params.get("until", ""),
    )


async def _instance(console: Console, request: Request, visitor: Visitor) -> tuple[Job, Instance]:
    job = await _job(console, request, visitor)
    instance = await console.services.jobs.get_instance(
        job.namespace, job.group_id, job.id, _path_int(request, "instance_id")
    )
    return job, instance


async def instance_page(console: Console, request: Request, visitor: Visitor) -> Response:
    job, instance = await _instance(console, request, visitor)
    tasks, workers = map_progress(instance.progress)
    return console.render(
        request,
        visitor,
        "instance.html",
        job=job,
        instance=instance,
        tasks=tasks,
        workers=workers,
        logs_served=console.services.logs is not None,
    )


async def instance_live(console: Console, request: Request, visitor: Visitor) -> Response:
    job, instance = await _instance(console, request, visitor)
    tasks, workers = map_progress(instance.progress)
    return console.render(
        request, visitor, "_instance_live.html", job=job, instance=instance, tasks=tasks, workers=workers
    )


async def instance_log(console: Console, request: Request, visitor: Visitor) -> Response:
    job, instance = await _instance(console, request, visitor)
    text = request.query_params.get("offset", "0")
    offset = int(text) if text.isdigit() else 0
    logs = console.services.instance_logs()
    read = await logs.read(
        job.namespace, job.group_id, job.id, instance.id, offset=offset, limit=LOG_LINES_PER_POLL, min_level=0
    )
    return console.render(
        request,
        visitor,
        "_log_lines.html",
        job=job,
        instance=instance,
        lines=read.lines,
        next_offset=read.next_offset,
        complete=read.complete,
        first=offset == 0,
    )


async def workflows_page(console: Console, request: Request, visitor: Visitor) -> Response:
    choice = await console.group_choice(request, visitor)
    page_num = page_number(request)
    items: list[Any] = []
    total = 0
    if choice.chosen and console.services.workflows is not None:
        page = await console.services.workflows.list_workflows(
            choice.namespace, choice.group_id, page_num=page_num, page_size=PAGE_SIZE
        )
        items, total = page.items, page.total
    return console.render(
        request,
        visitor,
        "workflows.html",
        choice=choice,
        workflows=items,
        total=total,
        page=page_num,
        pages=_pages(total),
        served=console.services.workflows is not None,
    )


async def workflow_page(console: Console, request: Request, visitor: Visitor) -> Response:
    namespace, group_id = request.path_params["ns"], request.path_params["group"]
    visitor.check_namespace(namespace)
    workflow_id = _path_int(request, "workflow_id")
    service = console.services.workflow_service(workflow_id)
    workflow = await service.get_workflow(namespace, group_id, workflow_id)
    instances = (await service.list_instances(namespace, group_id, workflow_id, page_size=15)).items
    chosen_text = request.query_params.get("instance", "")
    chosen_id = int(chosen_text) if chosen_text.isdigit() else (instances[0].id if instances else None)
    base = request.scope.get("root_path", "")
    names = dict(await service.node_jobs(workflow))
    chosen = None
    node_views: list[Any] = []
    if chosen_id is not None:
        chosen, node_views = await service.get_instance(namespace, group_id, chosen_id)
        if chosen.workflow_id != workflow.id:
            raise BadRequest("instance", chosen_id, f"is not an instance of workflow {workflow.id}")
    if chosen is not None:
        nodes = [
            DagNode(
                job_id=v.job_id,
                name=v.name or names.get(v.job_id, ""),
                status=v.status,
                href=f"{base}/jobs/{namespace}/{group_id}/{v.job_id}/instances/{v.instance_id}"
                if v.instance_id is not None
                else f"{base}/jobs/{namespace}/{group_id}/{v.job_id}",
            )
            for v in node_views
        ]
        edges = list(chosen.edges)
    else:
        nodes = [
            DagNode(job_id=job_id, name=name, href=f"{base}/jobs/{namespace}/{group_id}/{job_id}")
            for job_id, name in names.items()
        ]
        edges = list(workflow.definition.edges)
    svg = dag_svg(nodes, edges, title=f"Graph of workflow {workflow.name}")
    template = "_workflow_graph.html" if request.headers.get("hx-request") else "workflow.html"
    return console.render(
        request,
        visitor,
        template,
        workflow=workflow,
        instances=instances,
        chosen=chosen,
        node_views=node_views,
        svg=svg,
    )


async def _workers(console: Console, choice: GroupChoice) -> list[Any]:
    if not choice.chosen:
        return []
    await console.services.admin.get_group(choice.namespace, choice.group_id)
    return console.services.worker_directory().connected_workers(choice.namespace, choice.group_id)


async def workers_page(console: Console, request: Request, visitor: Visitor) -> Response:
    choice = await console.group_choice(request, visitor)
    workers = await _workers(console, choice)
    return console.render(request, visitor, "workers.html", choice=choice, workers=workers)


async def workers_live(console: Console, request: Request, visitor: Visitor) -> Response:
    choice = await console.group_choice(request, visitor)
    workers = await _workers(console, choice)
    return console.render(request, visitor, "_workers_table.html", choice=choice, workers=workers)


async def alarms_page(console: Console, request: Request, visitor: Visitor) -> Response:
    choice = await console.group_choice(request, visitor)
    page_num = page_number(request)
    alarms: list[Any] = []
    total = 0
    if choice.chosen:
        page = await console.services.alarm_history().list_alarms(
            choice.namespace, choice.group_id, page_num=page_num, page_size=PAGE_SIZE
        )
        alarms, total = page.items, page.total
    return console.render(
        request,
        visitor,
        "alarms.html",
        choice=choice,
        alarms=alarms,
        total=total,
        page=page_num,
        pages=_pages(total),
    )
