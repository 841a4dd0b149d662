"""The errors of the scheduler's services: what the OpenAPI, the CLI and job sync are refused with.

Each carries an error code and an HTTP status that the API puts in the response envelope:

    SxError
    └── ServiceError
        ├── BadRequest      400  a missing or malformed parameter (names the field and value)
        ├── Unauthorized    401  a missing, wrong, expired or replayed signature
        ├── Forbidden       403  an access key used outside its namespace
        ├── NotFound        404  an unknown namespace, group, job, instance, calendar, workflow
        └── Conflict        409  a duplicate name, or an operation the current state forbids
"""

from __future__ import annotations

from typing import ClassVar

from sx.processors import DefinitionError, SxError

__all__ = ["BadRequest", "Conflict", "Forbidden", "NotFound", "ServiceError", "Unauthorized"]


class ServiceError(SxError):
    """An operation refused; ``code`` is the envelope's error code, ``http_status`` the HTTP status."""

    code: ClassVar[int] = 500
    http_status: ClassVar[int] = 500

    def __init__(self, message: str, *, field: str | None = None, value: object = None) -> None:
        self.message = message
        self.field = field
        self.value = value
        super().__init__(message)


class BadRequest(ServiceError):
    code = 400
    http_status = 400

    def __init__(self, field: str, value: object, message: str) -> None:
        super().__init__(f"{field}={_show(value)}: {message}", field=field, value=value)

    @classmethod
    def of(cls, error: DefinitionError) -> BadRequest:
        """The caller's invalid definition, naming the field the definition error names."""
        return cls(error.field, error.value, error.message)


class Unauthorized(ServiceError):
    code = 401
    http_status = 401


class Forbidden(ServiceError):
    code = 403
    http_status = 403


class NotFound(ServiceError):
    code = 404
    http_status = 404


class Conflict(ServiceError):
    code = 409
    http_status = 409


def _show(value: object) -> str:
    """A value for an error message, cut so a huge input does not make a huge message."""
    text = repr(value)
    return text if len(text) <= 200 else text[:200] + "..."
