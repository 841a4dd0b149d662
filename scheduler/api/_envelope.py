"""The response envelope of every OpenAPI answer, and its error codes.

Every response body is ``{code, success, message, requestId, data}``; the request id is also sent in
the ``x-request-id`` header and logged, so a user's report can be matched to the server's log line.

Error codes (the envelope's ``code``; the HTTP status is the same number):

    code  meaning                      when
    ----  ---------------------------  ---------------------------------------------------------------
    200   success
    400   invalid parameter            a field is missing, malformed or out of range; an invalid job
                                       definition (cron, executeMode, ...): the message names the field
                                       and the value
    401   unauthenticated              access keys exist and the request is unsigned, wrongly signed,
                                       dated outside the allowed skew, or replays a nonce
    403   forbidden                    the signing key belongs to another namespace
    404   not found                    an unknown namespace, group, job (also: a job of another
                                       namespace or group), instance, calendar, access key, workflow,
                                       or path
    405   method not allowed           a method other than GET or POST
    409   conflict                     a duplicate name, or an operation the current state forbids
                                       (stopping a finished instance)
    500   internal error               a fault of the scheduler itself (logged with the request id)
"""

from __future__ import annotations

import json
from enum import IntEnum
from typing import Any

from starlette.responses import Response

__all__ = ["REQUEST_ID_HEADER", "ErrorCode", "envelope"]

REQUEST_ID_HEADER = "x-request-id"


class ErrorCode(IntEnum):
    SUCCESS = 200
    INVALID_PARAMETER = 400
    UNAUTHENTICATED = 401
    FORBIDDEN = 403
    NOT_FOUND = 404
    METHOD_NOT_ALLOWED = 405
    CONFLICT = 409
    INTERNAL_ERROR = 500


def envelope(
    request_id: str,
    *,
    data: Any = None,
    message: str = "",
    code: int = ErrorCode.SUCCESS,
) -> Response:
    """A JSON envelope response; the HTTP status equals the code."""
    body = {
        "code": int(code),
        "success": code == ErrorCode.SUCCESS,
        "message": message,
        "requestId": request_id,
        "data": data,
    }
    return Response(
        content=json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode(),
        status_code=int(code),
        media_type="application/json",
        headers={REQUEST_ID_HEADER: request_id},
    )
