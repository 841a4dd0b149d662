"""The errors of the OpenAPI client, under the project's root ``SxError``:

OpenApiError               code, message, request_id, http_status (and field, when named)
├── InvalidRequestError    400: a parameter or job definition the scheduler refused
├── AuthError              401, 403: unsigned, wrongly signed, or another namespace's key
├── NotFoundError          404
├── ConflictError          409: a duplicate name, or a state that forbids the operation
├── ServerError            5xx, or an answer that is not the OpenAPI's envelope
└── UnavailableError       the scheduler could not be reached (after the retries)
"""

from __future__ import annotations

import re
from typing import Final

from sx.processors import SxError

__all__ = [
    "AuthError",
    "ConflictError",
    "InvalidRequestError",
    "NotFoundError",
    "OpenApiError",
    "ServerError",
    "UnavailableError",
    "error_class",
]

_FIELD_IN_MESSAGE = re.compile(r"^([A-Za-z_][\w.\[\]]*)=")


class OpenApiError(SxError):
    """The scheduler refused a request, or could not be reached."""

    def __init__(
        self, message: str, *, code: int = 0, request_id: str = "", http_status: int = 0, path: str = ""
    ) -> None:
        self.code = code
        self.message = message
        self.request_id = request_id
        self.http_status = http_status
        self.path = path
        match = _FIELD_IN_MESSAGE.match(message)
        self.field: str | None = match.group(1) if match else None
        """The parameter the scheduler's message names (``field=value: why``), when it names one."""
        where = f" ({path})" if path else ""
        rid = f" [requestId {request_id}]" if request_id else ""
        super().__init__(f"{code or http_status}{where}: {message}{rid}")


class InvalidRequestError(OpenApiError):
    """400: a missing or malformed parameter or an invalid job definition."""


class AuthError(OpenApiError):
    """401 or 403: the request is unsigned, wrongly signed, or signed by another namespace's key."""


class NotFoundError(OpenApiError):
    """404: no such namespace, group, job, instance, calendar, key or workflow."""


class ConflictError(OpenApiError):
    """409: a duplicate name, or an operation the current state forbids."""


class ServerError(OpenApiError):
    """5xx, or an answer that is not the OpenAPI's envelope."""


class UnavailableError(OpenApiError):
    """No answer: the connection failed or timed out, also after the retries."""


_BY_CODE: Final[dict[int, type[OpenApiError]]] = {
    400: InvalidRequestError,
    401: AuthError,
    403: AuthError,
    404: NotFoundError,
    409: ConflictError,
}


def error_class(code: int) -> type[OpenApiError]:
    if code in _BY_CODE:
        return _BY_CODE[code]
    return ServerError if code >= 500 or code < 400 else InvalidRequestError
