"""The OpenAPI's namespace routes: namespaces, groups, calendars and access keys."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from datetime import date
from typing import Any

from sx.worker.openapi._errors import ConflictError, NotFoundError
from sx.worker.openapi._models import AccessKeyInfo, CalendarInfo, GroupInfo, NamespaceInfo
from sx.worker.openapi._transport import OpenApiTransport

__all__ = ["NamespaceRoutes"]


class NamespaceRoutes(OpenApiTransport):
    """The namespace, group, calendar and access key endpoints of ``OpenApiClient``."""

    # -- extensions: namespaces and groups ----------------------------------------------------------

    async def create_namespace(
        self, namespace: str | None = None, *, name: str = "", description: str = ""
    ) -> NamespaceInfo:
        params = {"namespace": namespace or self.namespace, "name": name, "description": description}
        data = await self.call("/openapi/v1/namespace/create", params, idempotent=False, address=False)
        return NamespaceInfo.model_validate(data)

    async def list_namespaces(self) -> list[NamespaceInfo]:
        data = await self.call("/openapi/v1/namespace/list", idempotent=True, address=False)
        return [NamespaceInfo.model_validate(item) for item in data]

    async def create_group(self, *, app_key: str | None = None, description: str = "") -> GroupInfo:
        """Create this client's group in its namespace."""
        params: dict[str, Any] = {"description": description}
        if app_key is not None:
            params["appKey"] = app_key
        return GroupInfo.model_validate(await self.call("/openapi/v1/group/create", params, idempotent=False))

    async def get_group(self) -> GroupInfo:
        return GroupInfo.model_validate(await self.call("/openapi/v1/group/get", idempotent=True))

    async def list_groups(self) -> list[GroupInfo]:
        data = await self.call(
            "/openapi/v1/group/list", {"namespace": self.namespace}, idempotent=True, address=False
        )
        return [GroupInfo.model_validate(item) for item in data]

    async def ensure_group(self) -> GroupInfo:
        """This client's group, creating its namespace and the group when missing (races are fine:
        whoever loses a create reads what the winner made)."""
        try:
            return await self.get_group()
        except NotFoundError:
            pass
        if self.namespace not in {n.namespace for n in await self.list_namespaces()}:
            with contextlib.suppress(ConflictError):
                await self.create_namespace()
        try:
            return await self.create_group()
        except ConflictError:
            return await self.get_group()

    # -- extensions: calendars and access keys ------------------------------------------------------

    async def put_calendar(self, name: str, days: Iterable[date], *, description: str = "") -> CalendarInfo:
        """Create or replace a calendar of this client's namespace."""
        params = {
            "namespace": self.namespace,
            "name": name,
            "days": [day.isoformat() for day in days],
            "description": description,
        }
        data = await self.call("/openapi/v1/calendar/put", params, idempotent=True, address=False)
        return CalendarInfo.model_validate(data)

    async def get_calendar(self, name: str) -> CalendarInfo:
        params = {"namespace": self.namespace, "name": name}
        data = await self.call("/openapi/v1/calendar/get", params, idempotent=True, address=False)
        return CalendarInfo.model_validate(data)

    async def list_calendars(self) -> list[CalendarInfo]:
        params = {"namespace": self.namespace}
        data = await self.call("/openapi/v1/calendar/list", params, idempotent=True, address=False)
        return [CalendarInfo.model_validate(item) for item in data]

    async def create_access_key(self) -> AccessKeyInfo:
        """A new key of this client's namespace; its secret is only in this answer."""
        params = {"namespace": self.namespace}
        data = await self.call("/openapi/v1/accesskey/create", params, idempotent=False, address=False)
        return AccessKeyInfo.model_validate(data)

    async def list_access_keys(self) -> list[AccessKeyInfo]:
        params = {"namespace": self.namespace}
        data = await self.call("/openapi/v1/accesskey/list", params, idempotent=True, address=False)
        return [AccessKeyInfo.model_validate(item) for item in data]

    async def delete_access_key(self, access_key_id: str) -> None:
        params = {"namespace": self.namespace, "accessKeyId": access_key_id}
        await self.call("/openapi/v1/accesskey/delete", params, idempotent=True, address=False)
