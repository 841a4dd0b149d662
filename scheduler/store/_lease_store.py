"""`LeaseStore`: scheduler replicas, the leases of the groups they dispatch, and the signals between
them."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Protocol

from sx.scheduler.store._records import GroupLease, SchedulerReplica

__all__ = ["LeaseStore"]


class LeaseStore(Protocol):
    """Scheduler replicas and group leases: which replica dispatches which group (namespace + group).

    A replica checks in every few seconds; each group is leased to one replica at a time, and every
    write its dispatcher makes is fenced by the lease's token (``update_instance(fence=...)``). Signals
    carry news between replicas (an instance created or a stop asked for on one replica reaches the
    group's owner): LISTEN/NOTIFY on PostgreSQL, in-process on SQLite (one scheduler)."""

    @abstractmethod
    async def check_in(self, replica: SchedulerReplica, *, now: datetime, ttl: timedelta) -> None:
        """Record the replica as alive until ``now + ttl`` (its addresses and presence key too)."""

    @abstractmethod
    async def check_out(self, replica_id: str, *, now: datetime) -> None:
        """The replica stops: remove it and give up every lease it holds."""

    @abstractmethod
    async def live_replicas(self, *, now: datetime) -> list[SchedulerReplica]:
        """Replicas whose check-in holds at ``now`` and (on PostgreSQL) whose presence lock is held."""

    @abstractmethod
    async def group_leases(self) -> list[GroupLease]:
        """Every group's lease, held or lapsed."""

    @abstractmethod
    async def take_lease(
        self,
        namespace: str,
        group_id: str,
        *,
        holder: str,
        now: datetime,
        ttl: timedelta,
        replacing: GroupLease | None,
    ) -> GroupLease | None:
        """Take a group's lease with a new token and the next epoch: when it has none (``replacing``
        None), or still exactly as ``replacing`` says (lapsed, or its holder gone). None when it moved
        meanwhile. Waits for writes fenced by the old token to commit."""

    @abstractmethod
    async def renew_leases(
        self, holder: str, tokens: Sequence[str], *, now: datetime, ttl: timedelta, workers: dict[str, str]
    ) -> set[str]:
        """Extend the leases held under these tokens that have not lapsed at ``now``; returns the tokens
        renewed (any other is lost). ``workers`` maps a token to its group's worker snapshot (JSON)."""

    @abstractmethod
    async def release_lease(self, token: str, *, now: datetime) -> None:
        """Give up the lease held under ``token`` (hand-over to another replica)."""

    @abstractmethod
    async def attend(self, presence_key: int, on_signal: Callable[[str], None]) -> None:
        """Hold this replica's presence (on PostgreSQL an advisory lock on a connection of its own, freed
        by the server the moment the process dies) and call ``on_signal(payload)`` for every signal,
        until ``close``. Called again after the connection was lost, it re-opens it."""

    @abstractmethod
    async def attending(self) -> bool:
        """Whether the presence (and signal) connection is open."""

    @abstractmethod
    async def signal(self, payload: str) -> None:
        """Send a signal to every replica attending (this one included)."""

    @abstractmethod
    async def request_stop(self, instance_id: int, reason: str, *, now: datetime) -> None:
        """Keep a stop asked for on a replica that does not dispatch the instance's group (the latest
        reason wins), for the group's next owner should the current one stop or die before applying
        its signal. Gone with the instance."""

    @abstractmethod
    async def stop_requests(self, namespace: str, group_id: str) -> list[tuple[int, str]]:
        """The kept stop requests (instance id, reason) of the group's unfinished instances."""
