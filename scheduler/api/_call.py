"""What an OpenAPI handler receives (``Call``) and how an endpoint is declared (``Endpoint``).

Handlers are plain async functions of a Call returning the envelope's ``data`` (or a ``Reply`` with a
message too); declaring them as data lets one wrapper do parameter reading, authentication, error
mapping and the envelope for all of them, and lets the OpenAPI document be generated from the same
declarations.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from sx.scheduler.api._auth import check_namespace
from sx.scheduler.api._params import ParamDoc, Params
from sx.scheduler.api._services import Services
from sx.scheduler.store import AccessKey

__all__ = [
    "ADDRESS",
    "GROUP_ID",
    "JOB_ID",
    "NAMESPACE",
    "NAMESPACE_SOURCE",
    "PAGE",
    "Call",
    "Endpoint",
    "Handler",
    "Reply",
]


@dataclass(frozen=True, slots=True)
class Reply:
    """Envelope data plus a message for a success that deserves one (e.g. a rejected trigger)."""

    data: Any = None
    message: str = ""


@dataclass(frozen=True, slots=True)
class Call:
    """One OpenAPI request as a handler sees it."""

    services: Services
    params: Params
    key: AccessKey | None
    """The access key that signed the request; None when the scheduler is open (no keys)."""
    request_id: str

    def namespace(self) -> str:
        """The required ``namespace`` parameter, checked against the signing key."""
        namespace = self.params.text("namespace", required=True, max_chars=200)
        check_namespace(self.key, namespace)
        return namespace

    def optional_namespace(self) -> str | None:
        namespace = self.params.optional_text("namespace", max_chars=200)
        check_namespace(self.key, namespace)
        return namespace

    def group_id(self) -> str:
        return self.params.text("groupId", required=True, max_chars=200)


Handler = Callable[[Call], Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class Endpoint:
    """An OpenAPI operation served at ``paths`` for GET and POST."""

    name: str
    paths: tuple[str, ...]
    summary: str
    handler: Handler
    tag: str
    params: tuple[ParamDoc, ...] = ()
    description: str = ""
    data: str = ""
    """What the envelope's data holds, for the document."""
    extension: bool = False
    """Not part of the original OpenAPI: marked as such in the document."""


NAMESPACE = ParamDoc("namespace", "string", "namespace id", required=True)
NAMESPACE_SOURCE = ParamDoc("namespaceSource", "string", "only for special third parties; stored and echoed")
GROUP_ID = ParamDoc("groupId", "string", "the application group workers join", required=True)
JOB_ID = ParamDoc("jobId", "integer", "job id", required=True)
ADDRESS = (NAMESPACE, NAMESPACE_SOURCE, GROUP_ID)
PAGE = (
    ParamDoc("pageNum", "integer", "page number, from 1 (default 1)"),
    ParamDoc("pageSize", "integer", "items per page, at most 100 (default 20)"),
)
