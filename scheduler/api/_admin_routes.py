"""Extension endpoints for what the original manages in its console: namespaces, groups, calendars
and access keys."""

from __future__ import annotations

from datetime import date
from typing import Any

from sx.scheduler._errors import BadRequest, Forbidden
from sx.scheduler.api._call import NAMESPACE, Call, Endpoint
from sx.scheduler.api._params import ParamDoc
from sx.scheduler.api._views import access_key_view, calendar_view, group_view, namespace_view

__all__ = ["ENDPOINTS"]

_EXT = "Extensions"
GROUP = ParamDoc("groupId", "string", "group id", required=True)
CALENDAR_NAME = ParamDoc("name", "string", "calendar name", required=True)


async def create_namespace(call: Call) -> dict[str, Any]:
    if call.key is not None:
        raise Forbidden("namespaces cannot be created with a namespace's access key; use the CLI")
    namespace = await call.services.admin.create_namespace(
        call.params.text("namespace", required=True, max_chars=64),
        name=call.params.text("name", max_chars=200),
        description=call.params.text("description", max_chars=2000),
    )
    return namespace_view(namespace)


async def list_namespaces(call: Call) -> list[dict[str, Any]]:
    namespaces = await call.services.admin.list_namespaces()
    if call.key is not None:
        namespaces = [n for n in namespaces if n.id == call.key.namespace]
    return [namespace_view(n) for n in namespaces]


async def create_group(call: Call) -> dict[str, Any]:
    group = await call.services.admin.create_group(
        call.namespace(),
        call.params.text("groupId", required=True, max_chars=64),
        app_key=call.params.optional_text("appKey", max_chars=200),
        description=call.params.text("description", max_chars=2000),
    )
    return group_view(group)


async def list_groups(call: Call) -> list[dict[str, Any]]:
    return [group_view(g) for g in await call.services.admin.list_groups(call.namespace())]


async def get_group(call: Call) -> dict[str, Any]:
    return group_view(await call.services.admin.get_group(call.namespace(), call.group_id()))


def _days(call: Call) -> list[date]:
    days: list[date] = []
    for item in call.params.text_list("days"):
        try:
            days.append(date.fromisoformat(item))
        except ValueError as exc:
            raise BadRequest("days", item, "must be dates as yyyy-MM-dd") from exc
    return days


async def put_calendar(call: Call) -> dict[str, Any]:
    namespace = call.namespace()
    calendar = await call.services.admin.put_calendar(
        namespace,
        call.params.text("name", required=True, max_chars=100),
        _days(call),
        description=call.params.text("description", max_chars=2000),
    )
    return calendar_view(calendar)


async def get_calendar(call: Call) -> dict[str, Any]:
    namespace = call.namespace()
    return calendar_view(
        await call.services.admin.get_calendar(namespace, call.params.text("name", required=True))
    )


async def list_calendars(call: Call) -> list[dict[str, Any]]:
    return [calendar_view(c) for c in await call.services.admin.list_calendars(call.namespace())]


async def create_access_key(call: Call) -> dict[str, Any]:
    key = await call.services.access_keys.create(call.namespace())
    return access_key_view(key, with_secret=True)


async def list_access_keys(call: Call) -> list[dict[str, Any]]:
    return [access_key_view(k) for k in await call.services.access_keys.list_keys(call.namespace())]


async def delete_access_key(call: Call) -> None:
    namespace = call.namespace()
    key_id = call.params.text("accessKeyId", required=True, max_chars=200)
    await call.services.access_keys.delete(key_id, namespace=namespace)


ENDPOINTS = (
    Endpoint(
        "CreateNamespace",
        ("/openapi/v1/namespace/create",),
        "Create a namespace",
        create_namespace,
        _EXT,
        (
            ParamDoc("namespace", "string", "namespace id: 1-64 letters, digits, _ . : -", required=True),
            ParamDoc("name", "string", "display name (default: the id)"),
            ParamDoc("description", "string", ""),
        ),
        description="Refused (403) for requests signed by an access key: keys belong to one namespace.",
        data="{namespace, name, description}",
        extension=True,
    ),
    Endpoint(
        "ListNamespaces",
        ("/openapi/v1/namespace/list",),
        "List namespaces (only the key's own when signed)",
        list_namespaces,
        _EXT,
        data="[{namespace, name, description}]",
        extension=True,
    ),
    Endpoint(
        "CreateGroup",
        ("/openapi/v1/group/create",),
        "Create an application group",
        create_group,
        _EXT,
        (
            NAMESPACE,
            GROUP,
            ParamDoc("appKey", "string", "the key workers present to join (generated when absent)"),
            ParamDoc("description", "string", ""),
        ),
        data="{namespace, groupId, appKey, description}",
        extension=True,
    ),
    Endpoint(
        "ListGroups",
        ("/openapi/v1/group/list",),
        "List a namespace's groups",
        list_groups,
        _EXT,
        (NAMESPACE,),
        data="[{namespace, groupId, appKey, description}]",
        extension=True,
    ),
    Endpoint(
        "GetGroup",
        ("/openapi/v1/group/get",),
        "Get a group",
        get_group,
        _EXT,
        (NAMESPACE, GROUP),
        data="{namespace, groupId, appKey, description}",
        extension=True,
    ),
    Endpoint(
        "PutCalendar",
        ("/openapi/v1/calendar/put",),
        "Create or replace a calendar (the days a cron job using it may fire)",
        put_calendar,
        _EXT,
        (
            NAMESPACE,
            CALENDAR_NAME,
            ParamDoc("days", "array", "dates yyyy-MM-dd, as a list or a comma-separated string"),
            ParamDoc("description", "string", ""),
        ),
        data="{namespace, name, description, days}",
        extension=True,
    ),
    Endpoint(
        "GetCalendar",
        ("/openapi/v1/calendar/get",),
        "Get a calendar",
        get_calendar,
        _EXT,
        (NAMESPACE, CALENDAR_NAME),
        data="{namespace, name, description, days}",
        extension=True,
    ),
    Endpoint(
        "ListCalendars",
        ("/openapi/v1/calendar/list",),
        "List a namespace's calendars",
        list_calendars,
        _EXT,
        (NAMESPACE,),
        data="[{namespace, name, description, days}]",
        extension=True,
    ),
    Endpoint(
        "CreateAccessKey",
        ("/openapi/v1/accesskey/create",),
        "Create an access key for a namespace (from then on requests must be signed)",
        create_access_key,
        _EXT,
        (NAMESPACE,),
        data="{accessKeyId, accessKeySecret, namespace, enabled}: the secret is shown only here",
        extension=True,
    ),
    Endpoint(
        "ListAccessKeys",
        ("/openapi/v1/accesskey/list",),
        "List a namespace's access keys (without secrets)",
        list_access_keys,
        _EXT,
        (NAMESPACE,),
        data="[{accessKeyId, namespace, enabled}]",
        extension=True,
    ),
    Endpoint(
        "DeleteAccessKey",
        ("/openapi/v1/accesskey/delete",),
        "Delete an access key",
        delete_access_key,
        _EXT,
        (NAMESPACE, ParamDoc("accessKeyId", "string", "the key to delete", required=True)),
        extension=True,
    ),
)
