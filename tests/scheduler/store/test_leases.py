"""Scheduler replicas and group leases in the store: taking, renewing, losing and handing over a lease,
fenced instance writes, presence (a replica whose process is gone is seen gone at once on PostgreSQL)
and signals between replicas, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.exc import DBAPIError

from sx.processors import InstanceStatus, JobSpec, TimeType, TriggerType
from sx.scheduler.store import (
    Fence,
    FencedError,
    Group,
    InstanceChange,
    Namespace,
    NewInstance,
    SchedulerReplica,
)
from sx.scheduler.store.sql import SqlStore
from tests.postgres import reset_database

TTL = timedelta(seconds=5)


def _now() -> datetime:
    return datetime.now(UTC)


def _replica(name: str, key: int) -> SchedulerReplica:
    return SchedulerReplica(
        name, grpc_address=f"{name}:9090", http_url=f"http://{name}:8080", presence_key=key
    )


async def _instance(store: SqlStore, group: str) -> int:
    if await store.get_namespace("ns") is None:
        await store.create_namespace(Namespace("ns", "ns"))
    if await store.get_group("ns", group) is None:
        await store.create_group(Group("ns", group, app_key="k"))
    job = await store.find_job("ns", group, f"job-{group}") or await store.create_job(
        namespace="ns",
        group_id=group,
        spec=JobSpec(name=f"job-{group}", class_name="tests.Job"),
        enabled=True,
        managed=False,
        next_fire_time=None,
    )
    job_id = job.id
    when = _now()
    new = NewInstance(
        job_id=job_id,
        namespace="ns",
        group_id=group,
        status=InstanceStatus.WAITING,
        trigger_type=TriggerType.API,
        time_type=TimeType.API,
        schedule_time=when,
        data_time=when,
    )
    return (await store.create_instance(new)).id


async def test_a_lease_is_taken_once_renewed_by_its_holder_and_lost_when_it_lapses(store: SqlStore) -> None:
    now = _now()
    first = await store.take_lease("ns", "g", holder="a", now=now, ttl=TTL, replacing=None)
    assert first is not None and first.holder == "a" and first.epoch == 1
    # Another replica racing for a group that has a lease now gets nothing.
    assert await store.take_lease("ns", "g", holder="b", now=now, ttl=TTL, replacing=None) is None
    assert await store.renew_leases("a", [first.token], now=now, ttl=TTL, workers={}) == {first.token}
    # Only its holder renews it.
    assert await store.renew_leases("b", [first.token], now=now, ttl=TTL, workers={}) == set()
    # Past its expiry it is not renewed: the holder must treat it as lost.
    late = now + TTL + timedelta(seconds=1)
    assert await store.renew_leases("a", [first.token], now=late, ttl=TTL, workers={}) == set()
    taken = await store.take_lease("ns", "g", holder="b", now=late, ttl=TTL, replacing=first)
    assert taken is not None and taken.holder == "b" and taken.epoch == 2 and taken.token != first.token
    # A replica acting on what it read before the take-over is refused (compare-and-set on the token).
    assert await store.take_lease("ns", "g", holder="c", now=late, ttl=TTL, replacing=first) is None
    [lease] = await store.group_leases()
    assert (lease.holder, lease.epoch, lease.token) == ("b", 2, taken.token)


async def test_a_released_lease_is_taken_over_and_the_worker_snapshot_travels(store: SqlStore) -> None:
    now = _now()
    lease = await store.take_lease("ns", "g", holder="a", now=now, ttl=TTL, replacing=None)
    assert lease is not None
    await store.renew_leases(
        "a", [lease.token], now=now, ttl=TTL, workers={lease.token: '[{"worker_id": "w1"}]'}
    )
    assert (await store.group_leases())[0].workers == '[{"worker_id": "w1"}]'
    await store.release_lease(lease.token, now=now)
    [released] = await store.group_leases()
    assert released.holder == "" and released.expires_at <= now
    taken = await store.take_lease("ns", "g", holder="b", now=now, ttl=TTL, replacing=released)
    assert taken is not None and taken.epoch == 2 and taken.workers == "[]"


async def test_fenced_writes_need_the_current_lease_of_the_instances_group(store: SqlStore) -> None:
    instance_id = await _instance(store, "g")
    other_id = await _instance(store, "h")
    now = _now()
    lease = await store.take_lease("ns", "g", holder="a", now=now, ttl=TTL, replacing=None)
    assert lease is not None
    fence = Fence(tokens=frozenset({lease.token}), now=_now())
    running = InstanceChange(status=InstanceStatus.RUNNING)
    updated = await store.update_instance(instance_id, running, fence=fence)
    assert updated is not None and updated.status is InstanceStatus.RUNNING
    # A group whose lease it does not hold: refused, nothing written.
    with pytest.raises(FencedError) as refused:
        await store.update_instances([(instance_id, running), (other_id, running)], fence=fence)
    assert refused.value.instance_ids == [other_id]
    assert (await store.get_instance(other_id)).status is InstanceStatus.WAITING  # type: ignore[union-attr]
    # The lease lapsed (the writer was paused past it): refused, even with no other holder yet.
    lapsed = Fence(tokens=fence.tokens, now=now + TTL + timedelta(seconds=1))
    with pytest.raises(FencedError):
        await store.update_instance(instance_id, InstanceChange(status=InstanceStatus.SUCCESS), fence=lapsed)
    # Taken over: the old token is refused at once.
    late = now + TTL + timedelta(seconds=1)
    taken = await store.take_lease("ns", "g", holder="b", now=late, ttl=TTL, replacing=lease)
    assert taken is not None
    with pytest.raises(FencedError):
        await store.update_instance(instance_id, InstanceChange(status=InstanceStatus.SUCCESS), fence=fence)
    assert (await store.get_instance(instance_id)).status is InstanceStatus.RUNNING  # type: ignore[union-attr]
    # The new holder's fence writes; a missing instance is no fence matter (None as ever).
    new_fence = Fence(tokens=frozenset({taken.token}), now=_now())
    done = await store.update_instance(
        instance_id, InstanceChange(status=InstanceStatus.SUCCESS), fence=new_fence
    )
    assert done is not None and done.status is InstanceStatus.SUCCESS
    assert await store.update_instance(10_000_000, running, fence=new_fence) is None


async def test_check_in_and_out(store: SqlStore) -> None:
    now = _now()
    await store.attend(4242, lambda payload: None)
    await store.check_in(_replica("a", 4242), now=now, ttl=TTL)
    assert [r.replica_id for r in await store.live_replicas(now=now)] == ["a"]
    assert await store.live_replicas(now=now + TTL + timedelta(seconds=1)) == []
    lease = await store.take_lease("ns", "g", holder="a", now=now, ttl=TTL, replacing=None)
    assert lease is not None
    await store.check_out("a", now=now)
    assert await store.live_replicas(now=now) == []
    [released] = await store.group_leases()
    assert released.holder == ""


async def _signals(store: SqlStore) -> tuple[asyncio.Queue[str], int]:
    received: asyncio.Queue[str] = asyncio.Queue()
    key = 1000 + id(store) % 1_000_000
    await store.attend(key, received.put_nowait)
    return received, key


async def test_signals_reach_every_replica_attending(store: SqlStore) -> None:
    received, _ = await _signals(store)
    await store.signal("created 7")
    assert await asyncio.wait_for(received.get(), timeout=10) == "created 7"


@pytest.mark.postgres
async def test_a_replica_whose_connection_is_gone_is_seen_gone_before_its_check_in_lapses(
    _store_postgres_url: str,
) -> None:
    # Presence locks are PostgreSQL's (a SQLite file has one scheduler).
    reset_database(_store_postgres_url)
    store, other = SqlStore(_store_postgres_url), SqlStore(_store_postgres_url)
    await store.start()
    await other.start()
    try:
        received, key = await _signals(other)
        now = _now()
        await other.check_in(_replica("other", key), now=now, ttl=TTL)
        assert [r.replica_id for r in await store.live_replicas(now=now)] == ["other"]
        # Signals cross processes' connections: this store sends, the other hears.
        await store.signal("stop 3 enough")
        assert await asyncio.wait_for(received.get(), timeout=10) == "stop 3 enough"
        await other.close()  # what the server sees when the process dies: its connections end
        # Its check-in still holds, but its presence lock is free: it is gone.
        assert await store.live_replicas(now=now) == []
    finally:
        await other.close()
        await store.close()


async def test_stop_requests_are_kept_per_unfinished_instance_of_the_group(store: SqlStore) -> None:
    first, second = await _instance(store, "stops"), await _instance(store, "stops")
    elsewhere = await _instance(store, "other")
    await store.request_stop(first, "asked once", now=_now())
    await store.request_stop(first, "asked again", now=_now())  # the latest reason wins
    await store.request_stop(second, "asked", now=_now())
    await store.request_stop(elsewhere, "asked", now=_now())
    assert await store.stop_requests("ns", "stops") == [(first, "asked again"), (second, "asked")]
    # A finished instance needs no stop any more.
    await store.update_instance(second, InstanceChange(status=InstanceStatus.FAILED, end_time=_now()))
    assert await store.stop_requests("ns", "stops") == [(first, "asked again")]
    assert await store.stop_requests("ns", "other") == [(elsewhere, "asked")]


@pytest.mark.postgres
async def test_a_paused_replicas_open_transaction_does_not_hold_the_take_over(
    _store_postgres_url: str,
) -> None:
    # A replica paused (SIGSTOP) in the middle of a fenced write holds the lease row's share lock; the
    # server ends its idle transaction, so the take-over's compare-and-set on the old token goes through.
    reset_database(_store_postgres_url)
    paused, taker = SqlStore(_store_postgres_url), SqlStore(_store_postgres_url)
    await paused.start()
    await taker.start()
    try:
        await _instance(paused, "g")
        lease = await paused.take_lease("ns", "g", holder="paused", now=_now(), ttl=TTL, replacing=None)
        assert lease is not None
        async with paused.engine.connect() as conn:
            await conn.begin()
            # What a fenced write does first, then the process stops sending: idle in transaction.
            await conn.exec_driver_sql(
                "SELECT token FROM sx_group_leases WHERE namespace = 'ns' AND group_id = 'g' FOR SHARE"
            )
            # A bound for the test only: without the server's idle timeout this waits for ever.
            taken = await asyncio.wait_for(
                taker.take_lease("ns", "g", holder="taker", now=_now(), ttl=TTL, replacing=lease), timeout=60
            )
            assert taken is not None and taken.holder == "taker" and taken.epoch == lease.epoch + 1
            with pytest.raises(DBAPIError):  # the paused replica's transaction was ended by the server
                await conn.exec_driver_sql("SELECT 1")
    finally:
        await taker.close()
        await paused.close()
