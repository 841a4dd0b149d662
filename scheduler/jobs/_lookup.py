"""Looking records up for a caller, shared by the job, admin and workflow services.

Every record a caller reaches belongs to one namespace and group; a record of another one is
answered as not found, never shown. Listings answer either the one record of a name or a page.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

from sx.scheduler._errors import Conflict, NotFound
from sx.scheduler.store import AccessStore, Group, Namespace, Page

__all__ = [
    "Scoped",
    "found_by_name",
    "in_scope",
    "name_taken",
    "page_offset",
    "page_or_named",
    "require_group",
    "require_namespace",
]

T = TypeVar("T")


class Scoped(Protocol):
    """A record of one namespace and group (a job, a workflow, a workflow instance)."""

    @property
    def namespace(self) -> str: ...

    @property
    def group_id(self) -> str: ...


def in_scope(record: Scoped | None, namespace: str | None, group_id: str | None) -> bool:
    """``record`` exists and belongs to ``namespace`` and ``group_id`` (None skips that check)."""
    return (
        record is not None
        and (namespace is None or record.namespace == namespace)
        and (group_id is None or record.group_id == group_id)
    )


async def require_namespace(store: AccessStore, namespace: str) -> Namespace:
    found = await store.get_namespace(namespace)
    if found is None:
        raise NotFound(f"namespace={namespace!r}: no such namespace", field="namespace", value=namespace)
    return found


async def require_group(store: AccessStore, namespace: str, group_id: str) -> Group:
    found, group = await store.get_namespace_and_group(namespace, group_id)
    if found is None:
        raise NotFound(f"namespace={namespace!r}: no such namespace", field="namespace", value=namespace)
    if group is None:
        raise NotFound(
            f"groupId={group_id!r}: no such group in namespace {namespace!r}",
            field="groupId",
            value=group_id,
        )
    return group


def found_by_name(record: T | None, kind: str, name: str, group_id: str) -> T:
    """``record``, the ``kind`` (job, workflow) called ``name`` in a group; NotFound when it is None."""
    if record is None:
        raise NotFound(f"name={name!r}: no such {kind} in group {group_id!r}", field="name", value=name)
    return record


def name_taken(kind: str, name: str, group_id: str) -> Conflict:
    """The error for a second ``kind`` (job, workflow) of one name in a group."""
    return Conflict(
        f"name={name!r}: a {kind} of that name exists in group {group_id!r}", field="name", value=name
    )


def page_offset(page_num: int, page_size: int) -> int:
    """The offset of page ``page_num`` (from 1)."""
    return (page_num - 1) * page_size


async def page_or_named(
    name: str | None,
    *,
    find: Callable[[str], Awaitable[T | None]],
    page: Callable[[int, int], Awaitable[Page[T]]],
    page_num: int,
    page_size: int,
) -> Page[T]:
    """With ``name``: the record of that name (on page 1 only), found by ``find(name)``; otherwise
    page ``page_num``, read by ``page(offset, limit)``."""
    if name is not None:
        found = await find(name)
        items = [found] if found is not None else []
        return Page(items=items if page_num == 1 else [], total=len(items))
    return await page(page_offset(page_num, page_size), page_size)
