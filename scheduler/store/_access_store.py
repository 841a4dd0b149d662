"""`AccessStore`: namespaces, groups, access keys and request nonces, what the OpenAPI needs to
authenticate and scope a call."""

from __future__ import annotations

from abc import abstractmethod
from datetime import datetime
from typing import Protocol

from sx.scheduler.store._records import AccessKey, Group, Namespace

__all__ = ["AccessStore"]


class AccessStore(Protocol):
    """Namespaces, groups, access keys and request nonces: what the OpenAPI needs to authenticate
    and scope a call."""

    @abstractmethod
    async def create_namespace(self, namespace: Namespace) -> Namespace: ...

    @abstractmethod
    async def get_namespace(self, namespace_id: str) -> Namespace | None: ...

    @abstractmethod
    async def list_namespaces(self) -> list[Namespace]: ...

    @abstractmethod
    async def create_group(self, group: Group) -> Group: ...

    @abstractmethod
    async def get_group(self, namespace: str, group_id: str) -> Group | None: ...

    async def get_namespace_and_group(
        self, namespace: str, group_id: str
    ) -> tuple[Namespace | None, Group | None]:
        """The namespace and its group (each None when missing; the group is None when the namespace
        is). A store may answer in one look-up; this default asks twice."""
        found = await self.get_namespace(namespace)
        if found is None:
            return None, None
        return found, await self.get_group(namespace, group_id)

    @abstractmethod
    async def list_groups(self, namespace: str) -> list[Group]: ...

    @abstractmethod
    async def create_access_key(self, key: AccessKey) -> AccessKey: ...

    @abstractmethod
    async def get_access_key(self, key_id: str) -> AccessKey | None: ...

    @abstractmethod
    async def list_access_keys(self, namespace: str | None = None) -> list[AccessKey]: ...

    @abstractmethod
    async def has_access_keys(self) -> bool:
        """Whether any access key exists (enabled or not); one cheap look-up."""

    @abstractmethod
    async def delete_access_key(self, key_id: str) -> bool: ...

    @abstractmethod
    async def remember_nonce(self, nonce: str, expires_at: datetime) -> bool:
        """Record a request nonce; False when it was seen before and has not expired (a replay)."""
