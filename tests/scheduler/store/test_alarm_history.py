"""The alarm history in the store (`AlarmStore.page_alarms`) and the migration that indexes it by group,
on SQLite and PostgreSQL (the `store` fixture)."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from sx.scheduler.store import Alarm
from sx.scheduler.store.sql import SqlStore
from tests.scheduler.store._migrations import migrate

INDEX = "ix_sx_alarms_group"


async def _alarm(store: SqlStore, job_id: int, *, group_id: str = "g", delivered: bool = True) -> Alarm:
    return await store.record_alarm(
        namespace="ns", group_id=group_id, job_id=job_id, instance_id=None, kind="failure", channel="log",
        message=f"job {job_id}", delivered=delivered, detail={} if delivered else {"error": "refused"},
    )  # fmt: skip


async def test_page_alarms_filters_and_pages_one_group(store: SqlStore) -> None:
    first = await _alarm(store, 1)
    second = await _alarm(store, 2, delivered=False)
    third = await _alarm(store, 1)
    await _alarm(store, 1, group_id="other")
    page = await store.page_alarms("ns", "g")
    assert (page.items, page.total) == ([third, second, first], 3)
    assert second.detail == {"error": "refused"}
    assert (await store.page_alarms("ns", "g", job_id=1)).items == [third, first]
    assert (await store.page_alarms("ns", "g", delivered=False)).items == [second]
    assert (await store.page_alarms("ns", "g", delivered=True, job_id=2)).total == 0
    assert (await store.page_alarms("other-ns", "g")).total == 0
    paged = await store.page_alarms("ns", "g", offset=1, limit=1)
    assert (paged.items, paged.total) == ([second], 3)
    assert (await store.page_alarms("ns", "g", since=first.created_at)).total == 3
    assert (await store.page_alarms("ns", "g", until=first.created_at - timedelta(microseconds=1))).total == 0
    assert (await store.page_alarms("ns", "g", until=third.created_at)).total == 3
    with pytest.raises(ValueError, match="since"):
        await store.page_alarms("ns", "g", since=datetime(2030, 1, 1))
    with pytest.raises(ValueError, match="limit"):
        await store.page_alarms("ns", "g", limit=-1)


def _alarm_indexes(connection: Connection) -> set[str]:
    return {str(index["name"]) for index in sa.inspect(connection).get_indexes("sx_alarms")}


async def test_a_store_at_0004_gains_the_group_index_and_keeps_its_alarms(
    store: SqlStore, store_url: str
) -> None:
    kept = await _alarm(store, 7)
    async with store.engine.begin() as conn:
        await conn.run_sync(migrate, "downgrade", "0004")
        assert INDEX not in await conn.run_sync(_alarm_indexes)
    await store.close()
    again = SqlStore(store_url)
    await again.start()  # upgrades to head
    try:
        async with again.engine.connect() as conn:
            assert INDEX in await conn.run_sync(_alarm_indexes)
        assert (await again.page_alarms("ns", "g")).items == [kept]
    finally:
        await again.close()
