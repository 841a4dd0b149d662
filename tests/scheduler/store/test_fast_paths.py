"""The store's fast paths: the access-key answer cache, the one-look-up namespace and group, and the
SQLite synchronous reader and writer (also covered by the store contract, on both backends)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from sx.processors import InstanceStatus, JobSpec, TimeType, TriggerType
from sx.scheduler.store import AccessKey, Group, InstanceChange, Namespace, NewInstance
from sx.scheduler.store.sql import SqlStore, _access, sqlite_url

T0 = datetime(2030, 1, 1, tzinfo=UTC)


async def _eventually(ask: Callable[[], Awaitable[bool]], expected: bool, *, within: float = 30.0) -> None:
    """Wait until ``ask()`` answers ``expected`` (a cached answer expires in its own time)."""
    deadline = time.monotonic() + within
    while (answer := await ask()) is not expected:
        assert time.monotonic() < deadline, f"still {answer!r} after {within}s"
        await asyncio.sleep(0.02)


async def test_has_access_keys_sees_another_stores_change_after_the_cache_expires(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_access, "ACCESS_KEYS_CACHE_SECONDS", 0.2)
    async with SqlStore(sqlite_url(tmp_path)) as serving, SqlStore(sqlite_url(tmp_path)) as other:
        await serving.create_namespace(Namespace("ns", "ns"))
        assert await serving.has_access_keys() is False
        await other.create_access_key(AccessKey("K1", "secret", "ns", True))
        await _eventually(serving.has_access_keys, True)
        await other.delete_access_key("K1")
        await _eventually(serving.has_access_keys, False)


async def test_has_access_keys_follows_own_changes_at_once(store: SqlStore) -> None:
    await store.create_namespace(Namespace("ns", "ns"))
    assert await store.has_access_keys() is False
    await store.create_access_key(AccessKey("K1", "secret", "ns", True))
    assert await store.has_access_keys() is True
    assert await store.delete_access_key("K1") is True
    assert await store.has_access_keys() is False


async def test_namespace_and_group_in_one_look_up(store: SqlStore) -> None:
    assert await store.get_namespace_and_group("ns", "g") == (None, None)
    namespace = await store.create_namespace(Namespace("ns", "name", "about"))
    found, group = await store.get_namespace_and_group("ns", "g")
    assert found == namespace and group is None
    created = await store.create_group(Group("ns", "g", "app-key-123", "a group"))
    found, group = await store.get_namespace_and_group("ns", "g")
    assert found == namespace and group == created
    assert await store.get_namespace_and_group("ns", "other") == (namespace, None)


async def test_update_instance_guard_and_read_only_change(store: SqlStore) -> None:
    job = await store.create_job(
        namespace="ns",
        group_id="g",
        spec=JobSpec(name="j", class_name="a:B"),
        enabled=True,
        managed=False,
        next_fire_time=None,
    )
    instance = await store.create_instance(
        NewInstance(
            job_id=job.id,
            namespace="ns",
            group_id="g",
            status=InstanceStatus.WAITING,
            trigger_type=TriggerType.API,
            time_type=TimeType.API,
            schedule_time=T0,
            data_time=T0,
        )
    )
    running = InstanceChange(status=InstanceStatus.RUNNING, start_time=T0, worker_id="w")
    refused = await store.update_instance(instance.id, running, only_if_status=[InstanceStatus.READY])
    assert refused is None
    moved = await store.update_instance(instance.id, running, only_if_status=[InstanceStatus.WAITING])
    assert moved is not None and moved.status == InstanceStatus.RUNNING and moved.worker_id == "w"
    assert moved.start_time == T0
    # No change: a read, with and without the guard.
    assert await store.update_instance(instance.id, InstanceChange()) == moved
    assert (
        await store.update_instance(instance.id, InstanceChange(), only_if_status=[InstanceStatus.WAITING])
        is None
    )
    assert await store.get_instance(instance.id) == moved


async def test_cancelled_writer_keeps_its_transaction_whole(tmp_path: Path) -> None:
    async with SqlStore(sqlite_url(tmp_path)) as store:
        spec = JobSpec(name="j", class_name="a:B")
        task = asyncio.create_task(
            store.create_job(
                namespace="ns", group_id="g", spec=spec, enabled=True, managed=False, next_fire_time=None
            )
        )
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # The write lock was held until the transaction ended: the next write goes through.
        other = await store.create_job(
            namespace="ns",
            group_id="g",
            spec=JobSpec(name="k", class_name="a:B"),
            enabled=True,
            managed=False,
            next_fire_time=None,
        )
        assert other.id >= 1
