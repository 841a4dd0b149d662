"""What every console handler works with: the services, the sessions, the templates, the chosen group.

Handlers read and act only through ``Services`` (the same calls the OpenAPI's handlers make); the
templates only format what a handler gave them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.templating import Jinja2Templates

from sx.scheduler.api import Services
from sx.scheduler.console import _format
from sx.scheduler.console._session import CSRF_FIELD, Sessions, Visitor

__all__ = ["PAGE_SIZE", "Console", "GroupChoice", "page_number", "pager_query"]

TEMPLATES = Path(__file__).parent / "templates"
PAGE_SIZE = 25


@dataclass(frozen=True, slots=True)
class GroupChoice:
    """The namespace and group a list page shows, and what the visitor may choose from."""

    namespace: str
    group_id: str
    namespaces: list[str]
    groups: list[str]

    @property
    def chosen(self) -> bool:
        return bool(self.namespace and self.group_id)

    def query(self, **more: object) -> str:
        """The query string addressing this group (plus ``more``), for links."""
        values: dict[str, object] = {"ns": self.namespace, "group": self.group_id}
        values.update({k: v for k, v in more.items() if v not in (None, "")})
        return urlencode(values)


def pager_query(request: Request, page: int) -> str:
    """The request's query string with ``page`` set (and no one-off message), for a pager's links."""
    values = [(k, v) for k, v in request.query_params.multi_items() if k not in ("page", "msg", "err")]
    return urlencode([*values, ("page", str(page))])


def page_number(request: Request) -> int:
    """The ``page`` query parameter (from 1); a bad one reads as the first page."""
    text = request.query_params.get("page", "1")
    return max(1, int(text)) if text.isdigit() else 1


class Console:
    """The console's shared parts."""

    def __init__(self, services: Services, sessions: Sessions) -> None:
        self.services = services
        self.sessions = sessions
        self.templates = Jinja2Templates(directory=str(TEMPLATES))
        env = self.templates.env
        env.globals.update(
            status_name=_format.status_name,
            status_class=_format.status_class,
            time_tag=_format.time_tag,
            duration=_format.duration,
            level_name=_format.level_name,
            TIME_TYPES=_format.TIME_TYPES,
            TRIGGER_TYPES=_format.TRIGGER_TYPES,
            STATUS_NAMES=_format.STATUS_NAMES,
            EXECUTE_MODES=_format.EXECUTE_MODES,
            CSRF_FIELD=CSRF_FIELD,
            pager_query=pager_query,
        )

    def render(
        self, request: Request, visitor: Visitor, template: str, *, status_code: int = 200, **values: Any
    ) -> Response:
        context = {
            "base": request.scope.get("root_path", ""),
            "visitor": visitor,
            "csrf": visitor.csrf,
            "flash": request.query_params.get("msg", ""),
            "flash_error": request.query_params.get("err", ""),
            **values,
        }
        return self.templates.TemplateResponse(request, template, context, status_code=status_code)

    @staticmethod
    def redirect(request: Request, path: str, *, msg: str = "", err: str = "", **query: object) -> Response:
        """A 303 to ``path`` under the console (after an action), with a message to show there."""
        values = {k: v for k, v in {**query, "msg": msg, "err": err}.items() if v not in (None, "")}
        target = request.scope.get("root_path", "") + path
        if values:
            target += ("&" if "?" in target else "?") + urlencode(values)
        return RedirectResponse(target, status_code=303)

    async def group_choice(self, request: Request, visitor: Visitor) -> GroupChoice:
        """The group named by the ``ns`` and ``group`` query parameters, else the first the visitor
        may see; the namespace is checked against the visitor's key."""
        every = [n.id for n in await self.services.admin.list_namespaces()]
        namespaces = visitor.namespaces(every)
        namespace = request.query_params.get("ns", "") or (namespaces[0] if namespaces else "")
        if not namespace:
            return GroupChoice("", "", namespaces, [])
        visitor.check_namespace(namespace)
        groups = [g.group_id for g in await self.services.admin.list_groups(namespace)]
        group_id = request.query_params.get("group", "") or (groups[0] if groups else "")
        return GroupChoice(namespace, group_id, namespaces, groups)
