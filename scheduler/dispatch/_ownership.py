"""Group ownership: which groups this scheduler dispatches, under leases shared through the store.

Several scheduler replicas may share one PostgreSQL store; each group (namespace + group id) is
dispatched by exactly one of them. Every second each replica checks in and works out, for every group,
the replica that should own it: rendezvous hashing over the live replicas (a group goes to the replica
with the highest hash of the pair), so a replica joining or leaving moves only its own share. It then
renews the leases it holds, takes those of its groups that are free, lapsed or held by a replica that
is gone, and hands over those that should now be another live replica's.

Acquiring a group loads its instances (``on_acquired``); losing one — a hand-over, or a renewal that
fails because the lease lapsed, e.g. after the process was paused — forgets them and sends the group's
workers to the new owner (``on_lost``). Every dispatch write carries the `Fence` of the leases held
(their tokens), so a replica that lost a lease cannot change its group's instances any more.

Lease times are wall-clock times (``datetime.now``), whatever clock the scheduler's triggers run on:
they are about processes staying alive. Replica clocks must agree to well within a lease (NTP).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import secrets
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Protocol

from sx.scheduler.store import AccessStore, Fence, GroupLease, LeaseStore, SchedulerReplica

__all__ = ["GroupKey", "GroupOwnership", "OwnershipStore", "presence_key"]

log = logging.getLogger("sx.scheduler.dispatch")

GroupKey = tuple[str, str]
"""(namespace, group id)."""

_TICK = 1.0
"""Seconds between check-ins (and renewals); a lease lasts several ticks."""
_STALLED_AFTER = timedelta(seconds=3 * _TICK)
"""An owner whose lease was last renewed this long ago (as last read) has stopped renewing: a tick of
its own, one of ours reading it, and one of slack."""


class OwnershipStore(AccessStore, LeaseStore, Protocol):
    """The groups there are, and the replicas and leases."""


def _utc_now() -> datetime:
    return datetime.now(UTC)


def presence_key() -> int:
    """A fresh key for a replica's presence lock (a positive 31-bit number)."""
    return secrets.randbelow(2**31 - 1) + 1


def _affinity(replica_id: str, key: GroupKey) -> int:
    digest = hashlib.blake2b(f"{replica_id}\0{key[0]}\0{key[1]}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def rightful_owner(key: GroupKey, replica_ids: list[str]) -> str | None:
    """The replica that should dispatch a group, among these (rendezvous hashing)."""
    return max(replica_ids, key=lambda replica_id: _affinity(replica_id, key), default=None)


class GroupOwnership:
    """The leases this replica holds, and the loop that keeps, takes and hands them over.

    ``on_acquired(group)`` runs when a lease is taken (load the group's instances); ``on_lost(group,
    address)`` when one is given up or lost (forget them; ``address`` is the new owner's gRPC address,
    or "" when not known yet). ``workers_of(group)`` is the group's worker snapshot (JSON) published
    with each renewal for the other replicas' listings. ``on_signal(payload)`` receives the signals sent
    through the store.
    """

    def __init__(
        self,
        store: OwnershipStore,
        *,
        replica: SchedulerReplica,
        lease: timedelta,
        on_acquired: Callable[[GroupKey], Awaitable[None]],
        on_lost: Callable[[GroupKey, str], Awaitable[None]],
        workers_of: Callable[[GroupKey], str],
        on_signal: Callable[[str], None],
    ) -> None:
        if lease.total_seconds() < 2 * _TICK:
            raise ValueError(f"lease={lease.total_seconds()!r}: must be at least {2 * _TICK:g} seconds")
        self._store = store
        self.replica = replica
        self._lease = lease
        self._on_acquired = on_acquired
        self._on_lost = on_lost
        self._workers_of = workers_of
        self._on_signal = on_signal
        self._held: dict[GroupKey, GroupLease] = {}
        self._leases: dict[GroupKey, GroupLease] = {}
        """Every group's lease as last read (the others' too)."""
        self._replicas: dict[str, SchedulerReplica] = {}
        """The live replicas as last read, by id."""
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()
        """One change of the held leases at a time (the loop, and claims at registration)."""
        self._task: asyncio.Task[None] | None = None

    @property
    def replica_id(self) -> str:
        return self.replica.replica_id

    # -- what the dispatcher asks -----------------------------------------------------------------
    def owns(self, group: GroupKey) -> bool:
        return group in self._held

    def held(self) -> list[GroupKey]:
        return list(self._held)

    def fence(self) -> Fence:
        """The proof every dispatch write carries: the tokens of the leases held, now."""
        return Fence(tokens=frozenset(lease.token for lease in self._held.values()), now=_utc_now())

    def owner_address(self, group: GroupKey) -> str:
        """The gRPC address of the replica holding a group's lease now, "" when none does."""
        lease = self._leases.get(group)
        if lease is None or lease.expires_at <= _utc_now():
            return ""
        replica = self._replicas.get(lease.holder)
        return replica.grpc_address if replica is not None else ""

    def workers_snapshot(self, group: GroupKey) -> list[dict[str, object]]:
        """The owner's last published list of a group's workers (another replica's group)."""
        lease = self._leases.get(group)
        if lease is None or lease.expires_at <= _utc_now():
            return []
        snapshot: list[dict[str, object]] = json.loads(lease.workers or "[]")
        return snapshot

    def recovering(self, group: GroupKey, within: timedelta) -> bool:
        """Whether a group is between owners: no live replica holds it, its owner has stopped renewing
        (paused or stalled: it dispatches nothing meanwhile), or one took it over (from another) less
        than ``within`` ago, so its workers may still be coming back to it."""
        lease = self._leases.get(group)
        if lease is None:
            return False  # never dispatched yet: nothing of it can be in the way
        now = _utc_now()
        if lease.expires_at <= now or lease.holder not in self._replicas:
            return True
        renewed_at = lease.renewed_at
        if renewed_at is not None and group not in self._held and now - renewed_at > _STALLED_AFTER:
            return True
        return lease.epoch > 1 and now - lease.acquired_at < within

    def suspect(self) -> None:
        """A fenced write was refused: check the leases now rather than at the next tick."""
        self._wake.set()

    async def claim(self, group: GroupKey) -> bool:
        """Take a group's lease now if this replica should own it and it is free (a worker of a group no
        one holds yet is registering here); True when this replica owns it."""
        if group in self._held:
            return True
        async with self._lock:
            if group in self._held:
                return True
            now = _utc_now()
            if rightful_owner(group, list(self._replicas)) != self.replica_id:
                return False
            self._leases = {lease.key: lease for lease in await self._store.group_leases()}
            await self._try_take(group, now)
        return group in self._held

    # -- lifecycle ----------------------------------------------------------------------------------
    async def start(self) -> None:
        """Check in, take this replica's share of the groups, and keep at it every second."""
        if self._task is not None:
            return
        await self._store.attend(self.replica.presence_key, self._on_signal)
        await self._tick()
        self._task = asyncio.create_task(self._loop(), name="sx-ownership")

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def stop(self) -> None:
        """Stop the loop and give every lease up, so the other replicas take the groups at once."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._held.clear()
        try:
            await self._store.check_out(self.replica_id, now=_utc_now())
        except Exception:
            log.exception("could not check out; the other replicas take the groups when the leases lapse")

    async def _loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=_TICK)
            self._wake.clear()
            try:
                await self._tick()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("group ownership check failed; retrying")

    async def _tick(self) -> None:
        async with self._lock:
            store = self._store
            if not await store.attending():
                log.warning("presence connection lost; opening it again")
                await store.attend(self.replica.presence_key, self._on_signal)
            now = _utc_now()
            await store.check_in(self.replica, now=now, ttl=self._lease)
            replicas = {r.replica_id: r for r in await store.live_replicas(now=now)}
            replicas[self.replica_id] = self.replica
            self._replicas = replicas
            await self._renew(now)
            self._leases = {lease.key: lease for lease in await store.group_leases()}
            groups = [
                (group.namespace, group.group_id)
                for namespace in await store.list_namespaces()
                for group in await store.list_groups(namespace.id)
            ]
            live = list(replicas)
            for group in groups:
                rightful = rightful_owner(group, live)
                if group in self._held:
                    if rightful != self.replica_id:
                        await self._hand_over(group, replicas[rightful] if rightful else None, now)
                elif rightful == self.replica_id:
                    await self._try_take(group, now)

    async def _renew(self, now: datetime) -> None:
        if not self._held:
            return
        tokens = {lease.token: group for group, lease in self._held.items()}
        workers = {token: self._workers_of(group) for token, group in tokens.items()}
        renewed = await self._store.renew_leases(
            self.replica_id, list(tokens), now=now, ttl=self._lease, workers=workers
        )
        for token, group in tokens.items():
            if token not in renewed:
                log.warning(
                    "lost the lease of group %s of namespace %s (it lapsed or was taken over)",
                    group[1],
                    group[0],
                )
                del self._held[group]
                await self._lost(group, "")

    async def _try_take(self, group: GroupKey, now: datetime) -> None:
        lease = self._leases.get(group)
        if lease is not None and lease.holder not in ("", self.replica_id) and lease.expires_at > now:
            if lease.holder not in self._replicas:
                # A replica that checked in after this tick read the live ones may hold it: look again
                # rather than take a live replica's group away.
                self._replicas.update({r.replica_id: r for r in await self._store.live_replicas(now=now)})
            if lease.holder in self._replicas:
                return  # held by a live replica: it hands the group over at its next check
        taken = await self._store.take_lease(
            group[0], group[1], holder=self.replica_id, now=now, ttl=self._lease, replacing=lease
        )
        if taken is None:
            return  # another replica moved first
        self._held[group] = taken
        self._leases[group] = taken
        before = f" from {lease.holder or 'no one'}" if lease is not None else ""
        log.info(
            "now dispatching group %s of namespace %s (lease epoch %d%s)",
            group[1],
            group[0],
            taken.epoch,
            before,
        )
        try:
            await self._on_acquired(group)
        except Exception:
            # Its instances could not be loaded: give it back, so this or another replica tries again.
            log.exception("loading group %s of namespace %s failed; releasing it", group[1], group[0])
            del self._held[group]
            await self._store.release_lease(taken.token, now=_utc_now())

    async def _hand_over(self, group: GroupKey, to: SchedulerReplica | None, now: datetime) -> None:
        lease = self._held.pop(group)
        address = to.grpc_address if to is not None else ""
        log.info(
            "handing group %s of namespace %s over to %s",
            group[1],
            group[0],
            to.replica_id if to is not None else "another replica",
        )
        await self._lost(group, address)
        await self._store.release_lease(lease.token, now=now)

    async def _lost(self, group: GroupKey, address: str) -> None:
        try:
            await self._on_lost(group, address)
        except Exception:
            log.exception("forgetting group %s of namespace %s failed", group[1], group[0])
