"""The scheduler's job OpenAPI over HTTP (an ASGI app).

Built on FastAPI because it serves a machine-readable OpenAPI document at ``/openapi.json`` and
interactive docs at ``/docs`` for free, so users of other languages can generate clients and try the
API in a browser. The endpoints themselves are declared as data (``Endpoint``) and share one wrapper
that reads parameters from the query string, a form body or a JSON body (merged; the body wins),
verifies the request signature, maps errors to the envelope's codes and logs one line per request
with its request id. Each endpoint answers GET and POST at its exact path.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from sx.processors import DefinitionError
from sx.scheduler._errors import BadRequest, ServiceError
from sx.scheduler.api import (
    _admin_routes,
    _alarm_routes,
    _instance_routes,
    _job_routes,
    _log_routes,
    _rerun_routes,
    _task_routes,
    _worker_routes,
    _workflow_routes,
)
from sx.scheduler.api._auth import Authenticator, SignedRequest, check_namespace
from sx.scheduler.api._call import Call, Endpoint, Reply
from sx.scheduler.api._envelope import ErrorCode, envelope
from sx.scheduler.api._ops_routes import Operations, add_ops_routes
from sx.scheduler.api._params import MAX_BODY_BYTES, ParamDoc, Params
from sx.scheduler.api._pop_front import POP_PATH, pop_handler
from sx.scheduler.api._services import Services
from sx.scheduler.store import AccessKey, DuplicateError
from sx.scheduler.store import NotFoundError as StoreNotFoundError

__all__ = ["ENDPOINTS", "ERROR_RESPONSES", "create_app"]

log = logging.getLogger("sx.scheduler.api")

ENDPOINTS: tuple[Endpoint, ...] = (
    *_job_routes.ENDPOINTS,
    *_instance_routes.ENDPOINTS,
    *_task_routes.ENDPOINTS,
    *_workflow_routes.ENDPOINTS,
    *_admin_routes.ENDPOINTS,
    *_worker_routes.ENDPOINTS,
    *_alarm_routes.ENDPOINTS,
    *_log_routes.ENDPOINTS,
    *_rerun_routes.ENDPOINTS,
)

_DESCRIPTION = """\
The job OpenAPI of a SchedulerX-2.0-style scheduler. Every endpoint accepts GET and POST, with
parameters in the query string, an `application/x-www-form-urlencoded` body or a JSON body (merged;
the body wins). Every response is the envelope `{code, success, message, requestId, data}`; the request
id is also in the `x-request-id` header. Error codes: 400 invalid parameter, 401 unauthenticated,
403 forbidden, 404 not found, 405 method not allowed, 409 conflict, 500 internal error.

Once an access key exists, requests must be signed with ACS3-HMAC-SHA256 (headers `x-acs-date`,
`x-acs-signature-nonce`, `x-acs-content-sha256`, `Authorization`). Operations tagged **Extensions** are
not part of the original OpenAPI.
"""

_TAG_DOCS = [
    {"name": "Jobs", "description": "Job operations of the original OpenAPI."},
    {"name": "Instances", "description": "Instance operations of the original OpenAPI."},
    {"name": "Workflows", "description": "Workflow operations of the original OpenAPI."},
    {
        "name": "Extensions",
        "description": "Added by this project, not in the original OpenAPI: listing jobs and instances, "
        "namespaces, groups, calendars, access keys, connected workers and the alarm history.",
    },
    {"name": "Health", "description": "Liveness; needs no signature."},
]


class _OpenApiApp(FastAPI):
    """FastAPI, with the OpenAPI endpoints answered without going through its routing.

    Every endpoint is one wrapper (``_wrap``) that reads its own parameters, catches every error and
    answers with an envelope, so FastAPI's middleware stack, route matching, dependency solving and
    request wrapping do nothing for it but cost about as much CPU as the endpoint itself. A GET or POST
    at an endpoint's exact path goes straight to the wrapper; everything else (docs, the document,
    unknown paths, other methods) goes through FastAPI as before. The routes stay registered, so the
    OpenAPI document is unchanged.
    """

    direct: dict[str, Any]
    """Path -> the wrapper serving it (for GET and POST)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] in ("GET", "POST") and not scope.get("root_path"):
            handler = self.direct.get(scope["path"])
            if handler is not None:
                scope["app"] = self
                response: Response = await handler(Request(scope, receive))
                await response(scope, receive, send)
                return
        await super().__call__(scope, receive, send)


def create_app(services: Services, *, auth: Authenticator, ops: Operations | None = None) -> FastAPI:
    """The OpenAPI app over ``services``, requests checked by ``auth`` (open while no access key
    exists); ``Services.jobs_only`` serves a scheduler without workflows. ``ops`` adds readiness,
    metrics and request observation."""
    app = _OpenApiApp(
        title="sx-worker scheduler OpenAPI",
        version="1",
        description=_DESCRIPTION,
        openapi_tags=_TAG_DOCS,
    )
    app.direct = {}
    for endpoint in ENDPOINTS:
        handler = _wrap(endpoint, services, auth, ops.observe_request if ops is not None else None)
        for path in endpoint.paths:
            app.direct[path] = handler
            for method in ("GET", "POST"):
                app.add_api_route(
                    path,
                    handler,
                    methods=[method],
                    name=endpoint.name,
                    summary=("[Extension] " if endpoint.extension else "") + endpoint.summary,
                    description=_operation_description(endpoint),
                    tags=[endpoint.tag],
                    openapi_extra=_openapi_extra(endpoint, method),
                    responses=ERROR_RESPONSES,
                )

    # The Alibaba Cloud SDKs' dialect (POP RPC) at "/", over the same services and keys.
    app.direct[POP_PATH] = pop_handler(
        services, auth, read_body=_read_body, observe=ops.observe_request if ops is not None else None
    )
    add_ops_routes(app, ops)

    async def http_error(request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, StarletteHTTPException) else 500
        code = {404: ErrorCode.NOT_FOUND, 405: ErrorCode.METHOD_NOT_ALLOWED}.get(
            status, ErrorCode.INTERNAL_ERROR
        )
        message = f"{request.method} {request.url.path}: " + (
            "no such path" if status == 404 else "only GET and POST are allowed" if status == 405 else "error"
        )
        response = envelope(_new_request_id(), code=code, message=message)
        if status == 405:
            response.headers["Allow"] = "GET, POST"
        return response

    app.add_exception_handler(StarletteHTTPException, http_error)
    return app


_ERROR_ENVELOPE: dict[str, Any] = {
    "type": "object",
    "required": ["code", "success", "message", "requestId", "data"],
    "properties": {
        "code": {"type": "integer", "description": "The HTTP status, repeated."},
        "success": {"type": "boolean", "enum": [False]},
        "message": {"type": "string", "description": "What was wrong, naming the field and its value."},
        "requestId": {"type": "string"},
        "data": {"nullable": True, "description": "Always null on an error."},
    },
}
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"description": meaning, "content": {"application/json": {"schema": _ERROR_ENVELOPE}}}
    for status, meaning in (
        (400, "An invalid parameter (named in the message)"),
        (401, "Unauthenticated: a missing or bad signature"),
        (403, "Forbidden: the access key's namespace does not cover the request"),
        (404, "Not found: no such namespace, group, job, instance or workflow"),
        (409, "Conflict: the name is taken, or the state forbids the action"),
    )
}
"""The error answers every operation may give, each the envelope with ``success`` false."""


def _new_request_id() -> str:
    return str(uuid.uuid4())


async def _read_body(request: Request) -> bytes:
    declared = request.headers.get("content-length", "")
    if declared.isascii() and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise BadRequest("body", f"{declared} bytes", f"must be at most {MAX_BODY_BYTES} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise BadRequest("body", f"{size}+ bytes", f"must be at most {MAX_BODY_BYTES} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _wrap(
    endpoint: Endpoint,
    services: Services,
    authenticator: Authenticator,
    observe: Callable[[str, int, float], None] | None,
) -> Any:
    async def handle(request: Request) -> Response:
        request_id = _new_request_id()
        started = time.perf_counter()
        key: AccessKey | None = None
        scope = request.scope
        try:
            body = await _read_body(request)
            # What request.url.query and request.headers give, without building those objects.
            query = scope.get("query_string", b"").decode()
            headers = {
                name.decode("latin-1").lower(): value.decode("latin-1") for name, value in scope["headers"]
            }
            raw_path = scope.get("raw_path") or request.url.path.encode()
            key = await authenticator.authenticate(
                SignedRequest(
                    method=request.method,
                    path=raw_path.decode("latin-1"),
                    query=query,
                    headers=headers,
                    body=body,
                )
            )
            params = Params.from_parts(query, body, headers.get("content-type", ""))
            if params.has("namespace") and isinstance(params.values["namespace"], str):
                check_namespace(key, params.values["namespace"])
            result = await endpoint.handler(
                Call(services=services, params=params, key=key, request_id=request_id)
            )
            reply = result if isinstance(result, Reply) else Reply(data=result)
            response = envelope(request_id, data=reply.data, message=reply.message)
        except ServiceError as exc:
            response = envelope(request_id, code=exc.code, message=exc.message)
        except DefinitionError as exc:
            response = envelope(request_id, code=ErrorCode.INVALID_PARAMETER, message=str(exc))
        except DuplicateError as exc:
            response = envelope(request_id, code=ErrorCode.CONFLICT, message=f"conflict: {exc}")
        except StoreNotFoundError as exc:
            response = envelope(request_id, code=ErrorCode.NOT_FOUND, message=f"not found: {exc}")
        except Exception:
            log.exception("%s %s failed; requestId=%s", request.method, request.url.path, request_id)
            response = envelope(
                request_id,
                code=ErrorCode.INTERNAL_ERROR,
                message=f"internal error; quote requestId {request_id} to the operator",
            )
        if observe is not None:
            # The path is one of the endpoint's fixed paths (served by exact match): a bounded label.
            observe(scope["path"], response.status_code, time.perf_counter() - started)
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "%s %s -> %d key=%s %.1fms requestId=%s",
                request.method,
                request.url.path,
                response.status_code,
                key.key_id if key is not None else "-",
                (time.perf_counter() - started) * 1000,
                request_id,
            )
        return response

    handle.__name__ = endpoint.name
    handle.__doc__ = endpoint.summary
    return handle


def _operation_description(endpoint: Endpoint) -> str:
    parts = []
    if endpoint.extension:
        parts.append("**Extension**: not part of the original OpenAPI.")
    if endpoint.description:
        parts.append(endpoint.description)
    parts.append(f"Envelope data: {endpoint.data or 'none'}.")
    return "\n\n".join(parts)


def _schema(param: ParamDoc) -> dict[str, Any]:
    if param.type == "array":
        return {"type": "array", "items": {}}
    return {"type": param.type}


def _openapi_extra(endpoint: Endpoint, method: str) -> dict[str, Any]:
    if not endpoint.params:
        return {}
    if method == "GET":
        return {
            "parameters": [
                {
                    "name": p.name,
                    "in": "query",
                    "required": p.required,
                    "description": p.description,
                    "schema": _schema(p) if p.type != "array" else {"type": "string"},
                }
                for p in endpoint.params
            ]
        }
    schema = {
        "type": "object",
        "properties": {p.name: {**_schema(p), "description": p.description} for p in endpoint.params},
        "required": [p.name for p in endpoint.params if p.required],
    }
    return {
        "requestBody": {
            "required": False,
            "content": {
                "application/x-www-form-urlencoded": {"schema": schema},
                "application/json": {"schema": schema},
            },
        }
    }
