"""The console's ASGI app: its routes, and the one wrapper that checks sign-in, CSRF and errors.

Mounted at ``/console`` on the scheduler's HTTP port. Every page and fragment goes through ``_page``
(sign-in when access keys exist, a service's refusal shown as a page with its status and message);
every action through ``_action`` (the same, plus the CSRF token). Static files (htmx, the style
sheet, the page script) are served from the package.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from urllib.parse import parse_qsl, quote, urlencode

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from sx.processors import DefinitionError
from sx.scheduler.api import ServiceError, Services
from sx.scheduler.console import _actions, _pages
from sx.scheduler.console._context import Console
from sx.scheduler.console._session import CSRF_FIELD, CSRF_HEADER, Sessions, Visitor
from sx.scheduler.store import DuplicateError
from sx.scheduler.store import NotFoundError as StoreNotFoundError

__all__ = ["create_console"]

log = logging.getLogger("sx.scheduler.console")

STATIC = Path(__file__).parent / "static"
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
"""Only the console's own files run: an injected script or inline handler would not."""

PageHandler = Callable[[Console, Request, Visitor], Awaitable[Response]]
ActionHandler = Callable[[Console, Request, Visitor, dict[str, str]], Awaitable[Response]]
MAX_FORM_BYTES = 256 * 1024


async def read_form(request: Request) -> dict[str, str]:
    """A urlencoded form body (what the console's forms send); the last value of a repeated field.
    Anything else, or a body over ``MAX_FORM_BYTES``, reads as an empty form (and so fails CSRF)."""
    if not request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        return {}
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            return {}
    return dict(parse_qsl(body.decode("utf-8", errors="replace"), keep_blank_values=True))


def _finish(console: Console, request: Request, visitor: Visitor, response: Response) -> Response:
    if visitor.new_cookie is not None:
        console.sessions.set_cookie(response, visitor.new_cookie, request)
    response.headers.setdefault("Cache-Control", "no-store")
    response.headers.setdefault("X-Frame-Options", "DENY")
    response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
    response.headers.setdefault("Referrer-Policy", "same-origin")
    return response


def _refused(console: Console, request: Request, visitor: Visitor, exc: Exception) -> Response:
    """A service's refusal (or a store's), as a page or fragment saying what was wrong."""
    if isinstance(exc, ServiceError):
        status, message = exc.http_status, exc.message
    elif isinstance(exc, DefinitionError):
        status, message = 400, str(exc)
    elif isinstance(exc, DuplicateError):
        status, message = 409, f"conflict: {exc}"
    else:
        status, message = 404, f"not found: {exc}"
    template = "_error.html" if request.headers.get("hx-request") else "error.html"
    return console.render(request, visitor, template, status_code=status, status=status, message=message)


def _sign_in_redirect(request: Request) -> Response:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    base = request.scope.get("root_path", "")
    response: Response = RedirectResponse(f"{base}/login?{urlencode({'next': target})}", status_code=303)
    if request.headers.get("hx-request"):
        # htmx follows a redirect into the fragment's place; send the whole page to sign-in instead.
        response = Response(status_code=401, headers={"HX-Redirect": f"{base}/login"})
    return response


def _page(console: Console, handler: PageHandler) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        visitor = await console.sessions.visitor(request)
        if not visitor.allowed:
            return _finish(console, request, visitor, _sign_in_redirect(request))
        try:
            response = await handler(console, request, visitor)
        except (ServiceError, DefinitionError, DuplicateError, StoreNotFoundError) as exc:
            response = _refused(console, request, visitor, exc)
        return _finish(console, request, visitor, response)

    return endpoint


def _action(console: Console, handler: ActionHandler) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        visitor = await console.sessions.visitor(request)
        if not visitor.allowed:
            return _finish(console, request, visitor, _sign_in_redirect(request))
        form = await read_form(request)
        sent = request.headers.get(CSRF_HEADER) or form.get(CSRF_FIELD, "")
        if not console.sessions.csrf_ok(visitor, sent):
            log.warning(
                "console: %s %s refused: missing or wrong CSRF token", request.method, request.url.path
            )
            response = console.render(
                request,
                visitor,
                "error.html",
                status_code=403,
                status=403,
                message="the form's security token is missing or out of date: reload the page and try again",
            )
            return _finish(console, request, visitor, response)
        try:
            response = await handler(console, request, visitor, form)
        except (ServiceError, DefinitionError, DuplicateError, StoreNotFoundError) as exc:
            response = _refused(console, request, visitor, exc)
        return _finish(console, request, visitor, response)

    return endpoint


def _safe_next(request: Request, value: str) -> str:
    """Where to go after sign-in: a path under the console only (never another site)."""
    base = str(request.scope.get("root_path", ""))
    if value.startswith(base + "/") and not value.startswith("//") and "\\" not in value:
        return value
    return base + "/"


def _login(console: Console) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        visitor = await console.sessions.visitor(request)
        next_path = _safe_next(request, request.query_params.get("next", ""))
        if request.method == "GET":
            if visitor.allowed:
                return _finish(console, request, visitor, RedirectResponse(next_path, status_code=303))
            page = console.render(request, visitor, "login.html", error="", next_path=next_path, key_id="")
            return _finish(console, request, visitor, page)
        form = await read_form(request)
        sent = form.get(CSRF_FIELD, "")
        key_id, secret = form.get("accessKeyId", ""), form.get("accessKeySecret", "")
        next_path = _safe_next(request, form.get("next", ""))
        signed_in = None
        if console.sessions.csrf_ok(visitor, sent):
            signed_in = await console.sessions.sign_in(key_id, secret)
            error = "" if signed_in is not None else "unknown access key id, wrong secret, or a disabled key"
        else:
            error = "the form's security token is out of date: try again"
        if signed_in is None:
            log.info("console: sign-in refused for access key id %r", key_id[:64])
            page = console.render(
                request,
                visitor,
                "login.html",
                status_code=401 if not error.startswith("the form") else 403,
                error=error,
                next_path=next_path,
                key_id=key_id[:64],
            )
            return _finish(console, request, visitor, page)
        log.info("console: signed in with access key %s", signed_in.key.key_id if signed_in.key else "-")
        return _finish(console, request, signed_in, RedirectResponse(next_path, status_code=303))

    return endpoint


def _logout(console: Console) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        visitor = await console.sessions.visitor(request)
        form = await read_form(request)
        sent = form.get(CSRF_FIELD, "")
        base = request.scope.get("root_path", "")
        if not console.sessions.csrf_ok(visitor, sent):
            return Response("the form's security token is missing or out of date", status_code=403)
        response = RedirectResponse(f"{base}/login?msg={quote('signed out')}", status_code=303)
        console.sessions.set_cookie(response, console.sessions.signed_out(), request)
        return response

    return endpoint


def create_console(services: Services, *, session_secret: bytes | None = None) -> Starlette:
    """The console over ``services``; sessions are signed with ``session_secret`` (a random secret of
    this process by default: a restart signs everyone out)."""
    console = Console(services, Sessions(services.access_keys, secret=session_secret))
    job = "/jobs/{ns}/{group}/{job_id:int}"
    instance = job + "/instances/{instance_id:int}"
    workflow = "/workflows/{ns}/{group}/{workflow_id:int}"
    wf_instance = workflow + "/instances/{wf_instance_id:int}"

    def page(path: str, handler: PageHandler) -> Route:
        return Route(path, _page(console, handler), methods=["GET"])

    def action(path: str, handler: ActionHandler) -> Route:
        return Route(path, _action(console, handler), methods=["POST"])

    routes = [
        Route("/login", _login(console), methods=["GET", "POST"]),
        Route("/logout", _logout(console), methods=["POST"]),
        # Links are followed: an editable install (strict mode) lays the package out as links to the checkout.
        Mount("/static", StaticFiles(directory=STATIC, follow_symlink=True), name="static"),
        page("/", _pages.overview_page),
        page("/jobs", _pages.jobs_page),
        page(job, _pages.job_page),
        page(job + "/edit", _pages.job_edit_page),
        page(job + "/delete", _pages.job_delete_page),
        page(job + "/instances", _pages.instances_page),
        page(instance, _pages.instance_page),
        page(instance + "/live", _pages.instance_live),
        page(instance + "/log", _pages.instance_log),
        page("/instances", _pages.instances_page),
        page("/workflows", _pages.workflows_page),
        page(workflow, _pages.workflow_page),
        page("/workers", _pages.workers_page),
        page("/workers/live", _pages.workers_live),
        page("/alarms", _pages.alarms_page),
        action(job + "/execute", _actions.execute_job),
        action(job + "/enable", _actions.enable_job),
        action(job + "/disable", _actions.disable_job),
        action(job + "/edit", _actions.edit_job),
        action(job + "/delete", _actions.delete_job),
        action(instance + "/stop", _actions.stop_instance),
        action(instance + "/rerun", _actions.rerun_job_instance),
        action(workflow + "/execute", _actions.execute_workflow),
        action(workflow + "/enable", _actions.enable_workflow),
        action(workflow + "/disable", _actions.disable_workflow),
        action(wf_instance + "/stop", _actions.stop_workflow_instance),
        action(wf_instance + "/rerun", _actions.rerun_workflow_instance),
        action(wf_instance + "/rerun-node", _actions.rerun_workflow_node),
    ]
    return Starlette(routes=routes)
