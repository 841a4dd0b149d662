"""Namespaces, groups, access keys and request nonces (`AccessStore`) on SQL.

``has_access_keys`` is asked on every OpenAPI request: its answer is kept in memory for
``ACCESS_KEYS_CACHE_SECONDS``, and dropped at once when this store creates or deletes a key.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Final

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from sx.scheduler.store._access_store import AccessStore
from sx.scheduler.store._errors import DuplicateError
from sx.scheduler.store._records import AccessKey, Group, Namespace
from sx.scheduler.store.sql import _tables as tables
from sx.scheduler.store.sql._engine import SqlStoreBase
from sx.scheduler.store.sql._rows import check_aware, utc_now

__all__ = ["ACCESS_KEYS_CACHE_SECONDS", "SqlAccess"]

_NONCE_PURGE_INTERVAL: Final = 60.0
# has_access_keys is asked on every OpenAPI request: its answer is kept this long (seconds), and
# dropped at once when this store creates or deletes a key, so other processes' changes show soon.
ACCESS_KEYS_CACHE_SECONDS: Final = 1.0

# -- hot statements, built once ----------------------------------------------------------------------
# Building a statement per call costs more than running it: a new statement object has to be walked
# again for its compiled-cache key. These are built once and bound per call.
_t_ns, _t_groups, _t_keys = tables.namespaces, tables.groups, tables.access_keys
_GET_NAMESPACE: Final = sa.select(_t_ns).where(_t_ns.c.id == sa.bindparam("b_id"))
_GET_GROUP: Final = sa.select(_t_groups).where(
    _t_groups.c.namespace == sa.bindparam("b_namespace"), _t_groups.c.group_id == sa.bindparam("b_group")
)
# The namespace and its group in one look-up: no row, no namespace; a row of NULL group columns, no group.
_GET_NAMESPACE_GROUP: Final = (
    sa.select(
        _t_ns.c.id.label("ns_id"),
        _t_ns.c.name.label("ns_name"),
        _t_ns.c.description.label("ns_description"),
        _t_ns.c.created_at.label("ns_created_at"),
        _t_groups.c.group_id,
        _t_groups.c.app_key,
        _t_groups.c.description,
        _t_groups.c.created_at,
    )
    .select_from(
        _t_ns.outerjoin(
            _t_groups,
            sa.and_(_t_groups.c.namespace == _t_ns.c.id, _t_groups.c.group_id == sa.bindparam("b_group")),
        )
    )
    .where(_t_ns.c.id == sa.bindparam("b_namespace"))
)
_GET_ACCESS_KEY: Final = sa.select(_t_keys).where(_t_keys.c.key_id == sa.bindparam("b_id"))
_ANY_ACCESS_KEY: Final = sa.select(_t_keys.c.key_id).limit(1)


class SqlAccess(SqlStoreBase, AccessStore):
    """`AccessStore` on SQL: namespaces, groups, access keys (with the ``has_access_keys`` cache) and
    nonces."""

    def __init__(
        self,
        url: str,
        *,
        echo: bool = False,
        exclusive: bool = False,
        observe: Callable[[str, float], None] | None = None,
    ) -> None:
        super().__init__(url, echo=echo, exclusive=exclusive, observe=observe)
        self._last_nonce_purge = 0.0
        self._access_keys_cached: tuple[float, bool] | None = None
        self._access_keys_changes = 0  # bumped by this store's key creates and deletes

    async def close(self) -> None:
        self._access_keys_cached = None
        await super().close()

    async def create_namespace(self, namespace: Namespace) -> Namespace:
        created = namespace.created_at or utc_now()
        values = {
            "id": namespace.id,
            "name": namespace.name,
            "description": namespace.description,
            "created_at": created,
        }
        try:
            async with self._write() as conn:
                await conn.execute(sa.insert(tables.namespaces).values(values))
        except IntegrityError:
            raise DuplicateError(f"namespace {namespace.id!r} already exists") from None
        return Namespace(namespace.id, namespace.name, namespace.description, created.astimezone(UTC))

    async def get_namespace(self, namespace_id: str) -> Namespace | None:
        row = await self._fetch_one(_GET_NAMESPACE, {"b_id": namespace_id})
        return None if row is None else Namespace(row.id, row.name, row.description, row.created_at)

    async def list_namespaces(self) -> list[Namespace]:
        t = tables.namespaces
        async with self._read() as conn:
            rows = (await conn.execute(sa.select(t).order_by(t.c.id))).all()
        return [Namespace(r.id, r.name, r.description, r.created_at) for r in rows]

    async def create_group(self, group: Group) -> Group:
        created = group.created_at or utc_now()
        values = {
            "namespace": group.namespace,
            "group_id": group.group_id,
            "app_key": group.app_key,
            "description": group.description,
            "created_at": created,
        }
        try:
            async with self._write() as conn:
                await conn.execute(sa.insert(tables.groups).values(values))
        except IntegrityError:
            raise DuplicateError(
                f"group {group.group_id!r} already exists in namespace {group.namespace!r}"
            ) from None
        return Group(
            group.namespace, group.group_id, group.app_key, group.description, created.astimezone(UTC)
        )

    async def get_group(self, namespace: str, group_id: str) -> Group | None:
        row = await self._fetch_one(_GET_GROUP, {"b_namespace": namespace, "b_group": group_id})
        return (
            None
            if row is None
            else Group(row.namespace, row.group_id, row.app_key, row.description, row.created_at)
        )

    async def get_namespace_and_group(
        self, namespace: str, group_id: str
    ) -> tuple[Namespace | None, Group | None]:
        row = await self._fetch_one(_GET_NAMESPACE_GROUP, {"b_namespace": namespace, "b_group": group_id})
        if row is None:
            return None, None
        found = Namespace(row.ns_id, row.ns_name, row.ns_description, row.ns_created_at)
        if row.group_id is None:
            return found, None
        return found, Group(row.ns_id, row.group_id, row.app_key, row.description, row.created_at)

    async def list_groups(self, namespace: str) -> list[Group]:
        t = tables.groups
        query = sa.select(t).where(t.c.namespace == namespace).order_by(t.c.group_id)
        async with self._read() as conn:
            rows = (await conn.execute(query)).all()
        return [Group(r.namespace, r.group_id, r.app_key, r.description, r.created_at) for r in rows]

    async def create_access_key(self, key: AccessKey) -> AccessKey:
        created = key.created_at or utc_now()
        values = {
            "key_id": key.key_id,
            "secret": key.secret,
            "namespace": key.namespace,
            "enabled": key.enabled,
            "created_at": created,
        }
        try:
            async with self._write() as conn:
                await conn.execute(sa.insert(tables.access_keys).values(values))
        except IntegrityError:
            raise DuplicateError(f"access key {key.key_id!r} already exists") from None
        finally:
            self._access_keys_changed()
        return AccessKey(key.key_id, key.secret, key.namespace, key.enabled, created.astimezone(UTC))

    async def get_access_key(self, key_id: str) -> AccessKey | None:
        row = await self._fetch_one(_GET_ACCESS_KEY, {"b_id": key_id})
        if row is None:
            return None
        return AccessKey(row.key_id, row.secret, row.namespace, bool(row.enabled), row.created_at)

    async def list_access_keys(self, namespace: str | None = None) -> list[AccessKey]:
        t = tables.access_keys
        query = sa.select(t).order_by(t.c.namespace, t.c.key_id)
        if namespace is not None:
            query = query.where(t.c.namespace == namespace)
        async with self._read() as conn:
            rows = (await conn.execute(query)).all()
        return [AccessKey(r.key_id, r.secret, r.namespace, bool(r.enabled), r.created_at) for r in rows]

    async def has_access_keys(self) -> bool:
        # Asked on every OpenAPI request: answered from memory for ACCESS_KEYS_CACHE_SECONDS. This
        # store's own create_access_key and delete_access_key drop the answer at once.
        cached = self._access_keys_cached
        now = time.monotonic()
        if cached is not None and now - cached[0] < ACCESS_KEYS_CACHE_SECONDS:
            return cached[1]
        changes = self._access_keys_changes
        found = bool(await self._fetch(_ANY_ACCESS_KEY, {}))
        # Not when a create or delete ran meanwhile: the answer may predate it.
        if changes == self._access_keys_changes:
            self._access_keys_cached = (now, found)
        return found

    def _access_keys_changed(self) -> None:
        self._access_keys_changes += 1
        self._access_keys_cached = None

    async def delete_access_key(self, key_id: str) -> bool:
        t = tables.access_keys
        try:
            async with self._write() as conn:
                result = await conn.execute(sa.delete(t).where(t.c.key_id == key_id))
        finally:
            self._access_keys_changed()
        return result.rowcount > 0

    async def remember_nonce(self, nonce: str, expires_at: datetime) -> bool:
        check_aware("expires_at", expires_at)
        t = tables.nonces
        now = utc_now()
        purge = time.monotonic() - self._last_nonce_purge >= _NONCE_PURGE_INTERVAL
        async with self._write() as conn:
            # An expired record of the same nonce is no replay: drop it so the insert below wins.
            await conn.execute(sa.delete(t).where(t.c.nonce == nonce, t.c.expires_at <= now))
            inserted = await conn.execute(
                self._insert(t)
                .values(nonce=nonce, expires_at=expires_at)
                .on_conflict_do_nothing(index_elements=[t.c.nonce])
                .returning(t.c.nonce)
            )
            fresh = inserted.first() is not None
            if purge:
                await conn.execute(sa.delete(t).where(t.c.expires_at <= now))
        if purge:
            self._last_nonce_purge = time.monotonic()
        return fresh
