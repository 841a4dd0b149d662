"""The Alibaba Cloud POP RPC front at ``/``: what the official SchedulerX SDKs send, served by our API.

Both SDKs (the Tea ``alibabacloud-schedulerx220190430`` and the classic ``aliyun-python-sdk-
schedulerx2``) send every operation to the path ``/``, naming it in the ``x-acs-action`` header
(Tea) or the ``Action`` query parameter (classic), with PascalCase parameters in the query string and,
for POSTs, a form body. This front reads such a request, checks its signature (``PopAuthenticator``),
runs the action's entry of ``ACTIONS`` and answers in the SDKs' envelope:

    success   200  {"Code": 200, "Success": true, "Message": "", "RequestId": "...", "Data": {...}}
    error     4xx  {"Code": "<name>", "Message": "...", "RequestId": "..."}

Error codes, each with the HTTP status of the native API's same error:

    InvalidParameter            400  a missing or malformed parameter, named as the SDK names it
    SignatureDoesNotMatch       400  a wrong HMAC-SHA1 signature; the message ends with the server's
                                     StringToSign after a colon, which the classic SDK compares
    InvalidAction.NotSupported  400  an SDK operation this scheduler does not serve (named)
    InvalidAction.NotFound      400  no action, or one that is no SchedulerX operation
    InvalidVersion              400  a Version other than 2019-04-30
    Unauthorized                401  unsigned (while access keys exist), unknown key, wrong ACS3
                                     signature, a Timestamp out of the skew window, a replayed nonce
    Forbidden                   403  the key's namespace is not the one addressed
    NotFound                    404  an unknown namespace, group, job, instance or workflow
    Conflict                    409  a duplicate name, or a state that forbids the operation
    InternalError               500  a fault of the scheduler (logged with the request id)
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import Response

from sx.processors import DefinitionError
from sx.scheduler._errors import BadRequest, ServiceError
from sx.scheduler.api._auth import Authenticator, SignedRequest, check_namespace
from sx.scheduler.api._envelope import REQUEST_ID_HEADER
from sx.scheduler.api._params import parse_body, parse_query
from sx.scheduler.api._pop_actions import ACTIONS, API_VERSION, UNSUPPORTED_ACTIONS, PopAction, PopCall
from sx.scheduler.api._pop_signature import PopAuthenticator, SignatureMismatch
from sx.scheduler.api._pop_views import pascal
from sx.scheduler.api._services import Services
from sx.scheduler.store import AccessKey, DuplicateError
from sx.scheduler.store import NotFoundError as StoreNotFoundError

__all__ = ["POP_PATH", "pop_handler"]

log = logging.getLogger("sx.scheduler.api.pop")

POP_PATH = "/"

# Parameters every POP request may carry that address no operation field.
_COMMON = frozenset(
    {
        "Action",
        "Version",
        "Format",
        "RegionId",
        "AccessKeyId",
        "Signature",
        "SignatureMethod",
        "SignatureVersion",
        "SignatureNonce",
        "SignatureType",
        "Timestamp",
    }
)
_CODES = {
    400: "InvalidParameter",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    409: "Conflict",
    500: "InternalError",
}


class _PopError(Exception):
    """An answer of this front's own (not a service's), with its code and status."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def _reply(request_id: str, status: int, body: dict[str, Any]) -> Response:
    return Response(
        content=json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode(),
        status_code=status,
        media_type="application/json",
        headers={REQUEST_ID_HEADER: request_id},
    )


def _error(request_id: str, status: int, code: str, message: str) -> Response:
    return _reply(request_id, status, {"Code": code, "Message": message, "RequestId": request_id})


def _sdk_message(error: ServiceError, action: PopAction | None) -> str:
    """The service's message, its leading field renamed as the SDK names it."""
    name = error.field
    if name and error.message.startswith(f"{name}="):
        shown = action.sdk_name(name) if action is not None else pascal(name)
        return shown + error.message[len(name) :]
    return error.message


def _action_of(headers: dict[str, str], query: dict[str, Any]) -> PopAction:
    name = headers.get("x-acs-action") or query.get("Action") or ""
    if not isinstance(name, str) or not name:
        raise _PopError(
            400,
            "InvalidAction.NotFound",
            "Action: is required (the x-acs-action header or the Action parameter)",
        )
    version = headers.get("x-acs-version") or query.get("Version") or API_VERSION
    if version != API_VERSION:
        raise _PopError(400, "InvalidVersion", f"Version={str(version)[:40]!r}: only {API_VERSION} is served")
    action = ACTIONS.get(name)
    if action is not None:
        return action
    if name in UNSUPPORTED_ACTIONS:
        raise _PopError(
            400,
            "InvalidAction.NotSupported",
            f"Action={name!r}: this SchedulerX operation is not supported by this scheduler; supported: "
            + ", ".join(sorted(ACTIONS)),
        )
    raise _PopError(
        400, "InvalidAction.NotFound", f"Action={name[:80]!r}: no such SchedulerX 2019-04-30 operation"
    )


def pop_handler(
    services: Services,
    auth: Authenticator,
    *,
    read_body: Callable[[Request], Awaitable[bytes]],
    observe: Callable[[str, int, float], None] | None = None,
) -> Callable[[Request], Awaitable[Response]]:
    """The handler of GET and POST at ``/``; ``read_body`` reads a body within the API's size bound."""
    verifier = PopAuthenticator(auth)

    async def handle(request: Request) -> Response:
        request_id = str(uuid.uuid4())
        started = time.perf_counter()
        scope = request.scope
        action: PopAction | None = None
        key: AccessKey | None = None
        try:
            body = await read_body(request)
            query = scope.get("query_string", b"").decode("latin-1")
            headers = {
                name.decode("latin-1").lower(): value.decode("latin-1") for name, value in scope["headers"]
            }
            content_type = headers.get("content-type", "")
            query_values = parse_query(query)
            body_values = parse_body(body, content_type)
            action = _action_of(headers, query_values)
            signed_pairs = parse_qsl(query, keep_blank_values=True)
            if body and not content_type.lower().startswith("application/json"):
                signed_pairs += parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)
            key = await verifier.authenticate(
                SignedRequest(
                    method=request.method,
                    path=(scope.get("raw_path") or POP_PATH.encode()).decode("latin-1"),
                    query=query,
                    headers=headers,
                    body=body,
                ),
                {k: v for k, v in query_values.items() if isinstance(v, str)},
                signed_pairs,
            )
            params = {k: v for k, v in {**query_values, **body_values}.items() if k not in _COMMON}
            if isinstance(params.get("Namespace"), str):
                check_namespace(key, params["Namespace"])
            reply = await action.run(
                PopCall(
                    services=services, params=params, key=key, request_id=request_id, renames=action.renames
                )
            )
            envelope: dict[str, Any] = {
                "Code": 200,
                "Success": True,
                "Message": reply.message,
                "RequestId": request_id,
            }
            if reply.data is not None:
                envelope["Data"] = reply.data
            response = _reply(request_id, 200, envelope)
        except _PopError as exc:
            response = _error(request_id, exc.status, exc.code, exc.message)
        except SignatureMismatch as exc:
            response = _error(
                request_id,
                400,
                "SignatureDoesNotMatch",
                "the request's HMAC-SHA1 signature does not match; server string to sign is:"
                + exc.string_to_sign,
            )
        except ServiceError as exc:
            response = _error(
                request_id, exc.http_status, _CODES.get(exc.http_status, "Error"), _sdk_message(exc, action)
            )
        except DefinitionError as exc:
            bad = BadRequest.of(exc)
            response = _error(request_id, 400, _CODES[400], _sdk_message(bad, action))
        except DuplicateError as exc:
            response = _error(request_id, 409, _CODES[409], f"conflict: {exc}")
        except StoreNotFoundError as exc:
            response = _error(request_id, 404, _CODES[404], f"not found: {exc}")
        except Exception:
            log.exception("POP %s failed; requestId=%s", action.name if action else "-", request_id)
            response = _error(
                request_id, 500, _CODES[500], f"internal error; quote requestId {request_id} to the operator"
            )
        if observe is not None:
            observe(POP_PATH, response.status_code, time.perf_counter() - started)
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "POP %s -> %d key=%s %.1fms requestId=%s",
                action.name if action else "-",
                response.status_code,
                key.key_id if key is not None else "-",
                (time.perf_counter() - started) * 1000,
                request_id,
            )
        return response

    return handle
