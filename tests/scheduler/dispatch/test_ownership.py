"""Group ownership between scheduler replicas (``GroupOwnership``) on a real PostgreSQL store: the groups
are spread by rendezvous hashing, handed over when a replica joins, taken back when it leaves, and a
replica never takes a group a live replica holds."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta

import pytest

from sx.scheduler.dispatch._ownership import GroupKey, GroupOwnership, presence_key, rightful_owner
from sx.scheduler.store import Group, Namespace, SchedulerReplica
from sx.scheduler.store.sql import SqlStore
from tests.postgres import reset_database

GROUPS = [("ns", f"group-{n}") for n in range(12)]


def test_rendezvous_moves_only_the_joining_replicas_share() -> None:
    before = {group: rightful_owner(group, ["a", "b"]) for group in GROUPS}
    after = {group: rightful_owner(group, ["a", "b", "c"]) for group in GROUPS}
    moved = [group for group in GROUPS if before[group] != after[group]]
    assert moved and all(after[group] == "c" for group in moved)
    assert set(before.values()) == {"a", "b"}  # both get a share of twelve groups
    assert rightful_owner(GROUPS[0], []) is None


class Events:
    def __init__(self) -> None:
        self.acquired: list[GroupKey] = []
        self.lost: list[tuple[GroupKey, str]] = []
        self.changed = asyncio.Event()

    async def on_acquired(self, group: GroupKey) -> None:
        self.acquired.append(group)
        self.changed.set()

    async def on_lost(self, group: GroupKey, address: str) -> None:
        self.lost.append((group, address))
        self.changed.set()


@asynccontextmanager
async def replica(url: str, name: str, events: Events) -> AsyncIterator[GroupOwnership]:
    store = SqlStore(url)
    await store.start()
    ownership = GroupOwnership(
        store,
        replica=SchedulerReplica(name, grpc_address=f"{name}:9090", http_url="", presence_key=presence_key()),
        lease=timedelta(seconds=6),
        on_acquired=events.on_acquired,
        on_lost=events.on_lost,
        workers_of=lambda group: "[]",
        on_signal=lambda payload: None,
    )
    await ownership.start()
    try:
        yield ownership
    finally:
        await ownership.stop()
        await store.close()


async def until(check: Callable[[], bool], events: Events, what: str) -> None:
    """Wait (30 s at most) for ``check``, looking again at each event and at least every 0.1 s (some
    effects, such as another replica's lease being read, come with the next check-in)."""
    async with asyncio.timeout(30):
        while not check():
            events.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(events.changed.wait(), timeout=0.1)
    assert check(), what


@pytest.mark.postgres
async def test_groups_are_spread_handed_over_and_taken_back(_store_postgres_url: str) -> None:
    url = _store_postgres_url
    reset_database(url)
    setup = SqlStore(url)
    await setup.start()
    await setup.create_namespace(Namespace("ns", "ns"))
    for _, group_id in GROUPS:
        await setup.create_group(Group("ns", group_id, app_key="k"))
    await setup.close()

    a_events, b_events = Events(), Events()
    async with replica(url, "replica-a", a_events) as a:
        assert sorted(a.held()) == sorted(GROUPS)  # alone, it takes every group at start
        async with replica(url, "replica-b", b_events) as b:
            share = {g for g in GROUPS if rightful_owner(g, ["replica-a", "replica-b"]) == "replica-b"}
            assert share
            await until(lambda: set(b.held()) == share, b_events, "b to take its share")
            # a handed b's share over, sending their workers to b; it never held them twice.
            assert {group for group, _ in a_events.lost} == share
            assert {address for _, address in a_events.lost} == {"replica-b:9090"}
            assert set(a.held()) == set(GROUPS) - share
            await until(
                lambda: all(a.owner_address(g) == "replica-b:9090" for g in share), a_events, "a to see b"
            )
            fence_a, fence_b = a.fence(), b.fence()
            assert fence_a.tokens and fence_b.tokens and not fence_a.tokens & fence_b.tokens
        # b stopped (its leases given up): a takes them back at once.
        await until(lambda: sorted(a.held()) == sorted(GROUPS), a_events, "a to take the groups back")
        assert sorted(a_events.acquired) == sorted(GROUPS + sorted(share))


@pytest.mark.postgres
async def test_a_group_whose_live_owner_stopped_renewing_is_recovering(_store_postgres_url: str) -> None:
    """An owner that is alive (its presence held) but has stopped renewing, paused or stalled, dispatches
    nothing: the other replicas treat its group as between owners (fires follow the misfire policy
    rather than pile up and be rejected) until it renews again."""
    url = _store_postgres_url
    reset_database(url)
    stalled = SqlStore(url)
    await stalled.start()
    try:
        await stalled.create_namespace(Namespace("ns", "ns"))
        await stalled.create_group(Group("ns", "g", app_key="k"))
        key = presence_key()
        await stalled.attend(key, lambda payload: None)
        now = datetime.now(UTC)
        holder = SchedulerReplica("replica-a", grpc_address="replica-a:9090", http_url="", presence_key=key)
        await stalled.check_in(holder, now=now, ttl=timedelta(seconds=60))
        # Renewed ten seconds ago, for a minute: held, but its owner has been silent for a while.
        lease = await stalled.take_lease(
            "ns",
            "g",
            holder="replica-a",
            now=now - timedelta(seconds=10),
            ttl=timedelta(seconds=60),
            replacing=None,
        )
        assert lease is not None
        events = Events()
        async with replica(url, "replica-b", events) as b:
            await until(
                lambda: b.owner_address(("ns", "g")) == "replica-a:9090", events, "b to read the lease"
            )
            assert not b.owns(("ns", "g"))
            assert b.recovering(("ns", "g"), timedelta(0))
            await stalled.renew_leases(
                "replica-a", [lease.token], now=datetime.now(UTC), ttl=timedelta(seconds=60), workers={}
            )
            await until(lambda: not b.recovering(("ns", "g"), timedelta(0)), events, "b to see it renewed")
    finally:
        await stalled.close()
