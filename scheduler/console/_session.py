"""Who is using the console: a signed session cookie, sign-in with an access key, and CSRF tokens.

While no access key exists the scheduler only listens on loopback (as for the OpenAPI), so the console
is open. Once a key exists, every page asks for sign-in with an access key id and its secret; the
session then reaches that key's namespace only, exactly as a request signed by the key would, and is
re-checked against the store on each request (deleting or disabling the key ends it).

The cookie holds the key id and a CSRF token, signed with a secret of this process (so a restart signs
everyone out), HttpOnly and SameSite=Strict. Every POST must also carry the token (form field ``csrf``
or header ``X-CSRF-Token``): a page of another site cannot read it, so it cannot forge an action, even
against an open console on loopback.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass
from datetime import timedelta

from itsdangerous import BadSignature, URLSafeTimedSerializer
from starlette.requests import Request
from starlette.responses import Response

from sx.scheduler.api import AccessKeys, Forbidden
from sx.scheduler.store import AccessKey

__all__ = ["COOKIE_NAME", "CSRF_FIELD", "CSRF_HEADER", "SESSION_MAX_AGE", "Sessions", "Visitor"]

COOKIE_NAME = "sx_console"
CSRF_FIELD = "csrf"
CSRF_HEADER = "x-csrf-token"
SESSION_MAX_AGE = timedelta(hours=12)


@dataclass(frozen=True, slots=True)
class Visitor:
    """The person behind a request: signed in with ``key``, or on an open console (no key exists)."""

    key: AccessKey | None
    open: bool
    """No access key exists: the console needs no sign-in (and the scheduler is on loopback only)."""
    csrf: str
    new_cookie: str | None = None
    """A cookie value to set on the response (a first visit, or a sign-in)."""

    @property
    def allowed(self) -> bool:
        """May see pages: the console is open, or the visitor signed in."""
        return self.open or self.key is not None

    def namespaces(self, every: list[str]) -> list[str]:
        """The namespaces of ``every`` this visitor may see."""
        return every if self.key is None else [n for n in every if n == self.key.namespace]

    def check_namespace(self, namespace: str) -> None:
        """Forbidden when the signed-in key belongs to another namespace (as the OpenAPI checks it)."""
        if self.key is not None and self.key.namespace != namespace:
            raise Forbidden(
                f"namespace={namespace!r}: access key {self.key.key_id} belongs to namespace "
                f"{self.key.namespace!r}",
                field="namespace",
                value=namespace,
            )


class Sessions:
    """Reads and writes the console's session cookie over the store's access keys."""

    def __init__(self, access_keys: AccessKeys, *, secret: bytes | None = None) -> None:
        self._keys = access_keys
        self._signer = URLSafeTimedSerializer(secret or secrets.token_bytes(32), salt="sx-console-session")

    async def visitor(self, request: Request) -> Visitor:
        """Who sent ``request``; a fresh session (new CSRF token, nobody signed in) when its cookie is
        missing, forged or expired."""
        data = self._load(request.cookies.get(COOKIE_NAME, ""))
        stored_csrf, stored_key = data.get("csrf"), data.get("key")
        csrf = stored_csrf if isinstance(stored_csrf, str) else None
        key_id = stored_key if isinstance(stored_key, str) else None
        open_console = not await self._keys.exist()
        key = await self._keys.enabled_key(key_id) if key_id and not open_console else None
        if csrf is None:
            csrf = secrets.token_urlsafe(24)
            return Visitor(key=None, open=open_console, csrf=csrf, new_cookie=self._dump(None, csrf))
        return Visitor(key=key, open=open_console, csrf=csrf)

    async def sign_in(self, key_id: str, secret: str) -> Visitor | None:
        """A signed-in visitor with a new CSRF token; None when the id or secret is wrong."""
        key = await self._keys.verify(key_id.strip(), secret.strip())
        if key is None:
            return None
        csrf = secrets.token_urlsafe(24)
        return Visitor(key=key, open=False, csrf=csrf, new_cookie=self._dump(key.key_id, csrf))

    def signed_out(self) -> str:
        """A cookie value with nobody signed in and a new CSRF token."""
        return self._dump(None, secrets.token_urlsafe(24))

    @staticmethod
    def csrf_ok(visitor: Visitor, sent: str) -> bool:
        return bool(sent) and hmac.compare_digest(visitor.csrf.encode(), sent.encode())

    @staticmethod
    def set_cookie(response: Response, value: str, request: Request) -> None:
        response.set_cookie(
            COOKIE_NAME,
            value,
            max_age=int(SESSION_MAX_AGE.total_seconds()),
            path="/console",
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )

    def _load(self, value: str) -> dict[str, object]:
        if not value:
            return {}
        try:
            data = self._signer.loads(value, max_age=int(SESSION_MAX_AGE.total_seconds()))
        except BadSignature:
            return {}
        return data if isinstance(data, dict) else {}

    def _dump(self, key_id: str | None, csrf: str) -> str:
        return self._signer.dumps({"key": key_id, "csrf": csrf})
