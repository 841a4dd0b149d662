"""The scheduler's job OpenAPI over HTTP (an ASGI app), and the access keys that sign its requests.

``create_app(services, auth=...)`` builds the app over the scheduler's ``Services``; ``Authenticator``
verifies signed requests; ``create_access_key``, ``list_access_keys`` and ``delete_access_key`` manage
keys directly on a store (what ``sx-worker keys`` calls). ``ServiceError`` and its subclasses are
what the services refuse with; the app answers them with their code. The same app serves the
official Alibaba Cloud SchedulerX SDKs' dialect (POP RPC) at ``/`` (``_pop_front``), over the same
services and access keys.
"""

from sx.scheduler._errors import BadRequest, Conflict, Forbidden, NotFound, ServiceError, Unauthorized
from sx.scheduler.api._app import ENDPOINTS, create_app
from sx.scheduler.api._auth import (
    AccessKeys,
    Authenticator,
    SignedRequest,
    create_access_key,
    delete_access_key,
    list_access_keys,
)
from sx.scheduler.api._ops_routes import Operations
from sx.scheduler.api._services import Services

__all__ = [
    "ENDPOINTS",
    "AccessKeys",
    "Authenticator",
    "BadRequest",
    "Conflict",
    "Forbidden",
    "NotFound",
    "Operations",
    "ServiceError",
    "Services",
    "SignedRequest",
    "Unauthorized",
    "create_access_key",
    "create_app",
    "delete_access_key",
    "list_access_keys",
]
