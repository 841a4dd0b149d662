"""Namespaces, application groups and custom calendars: what the original manages in its console."""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Iterable
from datetime import date
from typing import Protocol

from sx.scheduler._errors import BadRequest, Conflict, NotFound
from sx.scheduler.jobs._lookup import require_group, require_namespace
from sx.scheduler.store import AccessStore, Calendar, CalendarStore, DuplicateError, Group, Namespace

__all__ = ["AdminService", "check_identifier"]

_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:\-]{0,63}$")
_CALENDAR_NAME_PATTERN = re.compile(r"^[^\x00-\x1f]{1,100}$")


def check_identifier(field: str, value: str) -> str:
    """Namespace and group ids: 1..64 characters, letters, digits and ``_ . : -``."""
    if not _ID_PATTERN.match(value):
        raise BadRequest(
            field, value, "must be 1 to 64 letters, digits or _ . : - (starting with a letter or digit)"
        )
    return value


class AdminStore(AccessStore, CalendarStore, Protocol):
    """What the admin service reads and writes."""


class AdminService:
    """Namespace, group and calendar operations; ``wake_triggers`` is called when a calendar changed
    (the jobs using it get their next fire time recomputed)."""

    def __init__(self, store: AdminStore, *, wake_triggers: Callable[[], None]) -> None:
        self._store = store
        self._wake_triggers = wake_triggers

    # -- namespaces and groups ------------------------------------------------------------------
    async def create_namespace(
        self, namespace_id: str, *, name: str = "", description: str = ""
    ) -> Namespace:
        check_identifier("namespace", namespace_id)
        try:
            return await self._store.create_namespace(
                Namespace(id=namespace_id, name=name or namespace_id, description=description)
            )
        except DuplicateError as exc:
            raise Conflict(f"namespace={namespace_id!r}: already exists", field="namespace") from exc

    async def list_namespaces(self) -> list[Namespace]:
        return await self._store.list_namespaces()

    async def create_group(
        self, namespace: str, group_id: str, *, app_key: str | None = None, description: str = ""
    ) -> Group:
        """Create a group; its app key (what workers present to join) is generated unless given."""
        check_identifier("groupId", group_id)
        await require_namespace(self._store, namespace)
        if app_key is not None and not 8 <= len(app_key) <= 128:
            raise BadRequest("appKey", app_key, "must be 8 to 128 characters")
        group = Group(
            namespace=namespace,
            group_id=group_id,
            app_key=app_key or secrets.token_urlsafe(24),
            description=description,
        )
        try:
            return await self._store.create_group(group)
        except DuplicateError as exc:
            raise Conflict(f"groupId={group_id!r}: already exists in namespace {namespace!r}") from exc

    async def get_group(self, namespace: str, group_id: str) -> Group:
        return await require_group(self._store, namespace, group_id)

    async def list_groups(self, namespace: str) -> list[Group]:
        await require_namespace(self._store, namespace)
        return await self._store.list_groups(namespace)

    # -- calendars --------------------------------------------------------------------------------
    async def put_calendar(
        self, namespace: str, name: str, days: Iterable[date], *, description: str = ""
    ) -> Calendar:
        """Create or replace a calendar; jobs using it get their next fire time recomputed."""
        if not _CALENDAR_NAME_PATTERN.match(name):
            raise BadRequest("name", name, "must be 1 to 100 printable characters")
        await require_namespace(self._store, namespace)
        calendar = await self._store.put_calendar(
            Calendar(namespace=namespace, name=name, days=frozenset(days), description=description)
        )
        self._wake_triggers()
        return calendar

    async def get_calendar(self, namespace: str, name: str) -> Calendar:
        calendar = await self._store.get_calendar(namespace, name)
        if calendar is None:
            raise NotFound(
                f"name={name!r}: no such calendar in namespace {namespace!r}", field="name", value=name
            )
        return calendar

    async def list_calendars(self, namespace: str) -> list[Calendar]:
        return await self._store.list_calendars(namespace)
