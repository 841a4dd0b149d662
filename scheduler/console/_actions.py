"""The console's actions (POST): execute, enable, disable, edit and delete jobs; stop and re-run
instances; execute, enable, disable workflows, stop and re-run their instances and failed nodes.

Each calls the service method the matching OpenAPI endpoint calls, after the namespace check the
OpenAPI makes, then redirects (303) to the page showing the outcome with a message. The wrapper in
``_app`` has already checked the sign-in and the CSRF token.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from sx.processors import InstanceStatus
from sx.scheduler.api import BadRequest, ServiceError
from sx.scheduler.console._context import Console
from sx.scheduler.console._session import Visitor
from sx.scheduler.jobs import rerun_instance

__all__ = [
    "EDITABLE_FIELDS",
    "delete_job",
    "disable_job",
    "disable_workflow",
    "edit_job",
    "enable_job",
    "enable_workflow",
    "execute_job",
    "execute_workflow",
    "rerun_job_instance",
    "rerun_workflow_instance",
    "rerun_workflow_node",
    "stop_instance",
    "stop_workflow_instance",
]

EDITABLE_FIELDS = (
    "description",
    "parameters",
    "timeType",
    "timeExpression",
    "maxConcurrency",
    "maxAttempt",
    "attemptInterval",
)
"""The common fields the edit form changes, by their OpenAPI (UpdateJob) names."""


def _address(request: Request, visitor: Visitor) -> tuple[str, str]:
    namespace, group_id = request.path_params["ns"], request.path_params["group"]
    visitor.check_namespace(namespace)
    return namespace, group_id


def _job_path(request: Request) -> str:
    p = request.path_params
    return f"/jobs/{p['ns']}/{p['group']}/{p['job_id']}"


def _text(form: dict[str, str], name: str) -> str:
    return form.get(name, "")


async def execute_job(console: Console, request: Request, visitor: Visitor, form: dict[str, str]) -> Response:
    namespace, group_id = _address(request, visitor)
    instance = await console.services.jobs.execute_job(
        namespace, group_id, request.path_params["job_id"], _text(form, "instanceParameters")
    )
    if instance.status == InstanceStatus.REJECTED:
        return console.redirect(
            request, _job_path(request), err=f"instance {instance.id} rejected: {instance.result}"
        )
    return console.redirect(
        request, f"{_job_path(request)}/instances/{instance.id}", msg=f"instance {instance.id} started"
    )


async def enable_job(console: Console, request: Request, visitor: Visitor, form: dict[str, str]) -> Response:
    namespace, group_id = _address(request, visitor)
    await console.services.jobs.set_enabled(namespace, group_id, request.path_params["job_id"], True)
    return console.redirect(request, _job_path(request), msg="job enabled")


async def disable_job(console: Console, request: Request, visitor: Visitor, form: dict[str, str]) -> Response:
    namespace, group_id = _address(request, visitor)
    await console.services.jobs.set_enabled(namespace, group_id, request.path_params["job_id"], False)
    return console.redirect(request, _job_path(request), msg="job disabled")


async def edit_job(console: Console, request: Request, visitor: Visitor, form: dict[str, str]) -> Response:
    namespace, group_id = _address(request, visitor)
    job_id = request.path_params["job_id"]
    fields = {name: _text(form, name) for name in EDITABLE_FIELDS if name in form}
    try:
        await console.services.jobs.update_job(namespace, group_id, job_id, fields)
    except ServiceError as exc:
        # Back to the form with what was typed, and the field the service named.
        job = await console.services.jobs.get_job(namespace, group_id, job_id)
        return console.render(
            request,
            visitor,
            "job_edit.html",
            status_code=exc.http_status,
            job=job,
            error=exc.message,
            typed=fields,
        )
    return console.redirect(request, _job_path(request), msg="job saved")


async def delete_job(console: Console, request: Request, visitor: Visitor, form: dict[str, str]) -> Response:
    namespace, group_id = _address(request, visitor)
    job = await console.services.jobs.get_job(namespace, group_id, request.path_params["job_id"])
    if _text(form, "confirm") != job.name:
        return console.redirect(
            request, f"{_job_path(request)}/delete", err="type the job's name exactly to confirm the deletion"
        )
    await console.services.jobs.delete_job(namespace, group_id, job.id)
    return console.redirect(
        request, "/jobs", msg=f"job {job.id} {job.name!r} deleted", ns=namespace, group=group_id
    )


async def stop_instance(
    console: Console, request: Request, visitor: Visitor, form: dict[str, str]
) -> Response:
    namespace, group_id = _address(request, visitor)
    instance_id = request.path_params["instance_id"]
    await console.services.jobs.stop_instance(namespace, group_id, request.path_params["job_id"], instance_id)
    return console.redirect(request, f"{_job_path(request)}/instances/{instance_id}", msg="stop requested")


async def rerun_job_instance(
    console: Console, request: Request, visitor: Visitor, form: dict[str, str]
) -> Response:
    namespace, group_id = _address(request, visitor)
    instance = await rerun_instance(
        console.services.jobs,
        namespace,
        group_id,
        request.path_params["job_id"],
        request.path_params["instance_id"],
    )
    return console.redirect(
        request, f"{_job_path(request)}/instances/{instance.id}", msg=f"re-run as instance {instance.id}"
    )


def _workflow_path(request: Request, instance_id: int | None = None) -> str:
    p = request.path_params
    path = f"/workflows/{p['ns']}/{p['group']}/{p['workflow_id']}"
    return path + (f"?instance={instance_id}" if instance_id is not None else "")


async def execute_workflow(
    console: Console, request: Request, visitor: Visitor, form: dict[str, str]
) -> Response:
    namespace, group_id = _address(request, visitor)
    workflow_id = request.path_params["workflow_id"]
    started = await console.services.workflow_service(workflow_id).execute(
        namespace, group_id, workflow_id, _text(form, "instanceParameters")
    )
    return console.redirect(
        request, _workflow_path(request, started.id), msg=f"workflow instance {started.id} started"
    )


async def enable_workflow(
    console: Console, request: Request, visitor: Visitor, form: dict[str, str]
) -> Response:
    namespace, group_id = _address(request, visitor)
    workflow_id = request.path_params["workflow_id"]
    await console.services.workflow_service(workflow_id).set_enabled(namespace, group_id, workflow_id, True)
    return console.redirect(request, _workflow_path(request), msg="workflow enabled")


async def disable_workflow(
    console: Console, request: Request, visitor: Visitor, form: dict[str, str]
) -> Response:
    namespace, group_id = _address(request, visitor)
    workflow_id = request.path_params["workflow_id"]
    await console.services.workflow_service(workflow_id).set_enabled(namespace, group_id, workflow_id, False)
    return console.redirect(request, _workflow_path(request), msg="workflow disabled")


async def stop_workflow_instance(
    console: Console, request: Request, visitor: Visitor, form: dict[str, str]
) -> Response:
    namespace, group_id = _address(request, visitor)
    wf_instance_id = request.path_params["wf_instance_id"]
    service = console.services.workflow_service(request.path_params["workflow_id"])
    await service.stop_instance(namespace, group_id, wf_instance_id)
    return console.redirect(request, _workflow_path(request, wf_instance_id), msg="workflow instance stopped")


async def rerun_workflow_instance(
    console: Console, request: Request, visitor: Visitor, form: dict[str, str]
) -> Response:
    namespace, group_id = _address(request, visitor)
    service = console.services.workflow_service(request.path_params["workflow_id"])
    again = await service.rerun_instance(namespace, group_id, request.path_params["wf_instance_id"])
    return console.redirect(
        request, _workflow_path(request, again.id), msg=f"re-run as workflow instance {again.id}"
    )


async def rerun_workflow_node(
    console: Console, request: Request, visitor: Visitor, form: dict[str, str]
) -> Response:
    namespace, group_id = _address(request, visitor)
    wf_instance_id = request.path_params["wf_instance_id"]
    job_text = _text(form, "jobId")
    service = console.services.workflow_service(request.path_params["workflow_id"])
    if not job_text.isdigit():
        raise BadRequest("jobId", job_text, "must be the id of a failed node's job")
    instance = await service.rerun_node(namespace, group_id, wf_instance_id, int(job_text))
    return console.redirect(
        request,
        _workflow_path(request, wf_instance_id),
        msg=f"node {job_text} re-runs as instance {instance.id}",
    )
