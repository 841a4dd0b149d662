"""The ``setup`` fixture of the dispatch tests: a store with a namespace, a group and a job (see
``test_harness``); the test starts the dispatcher, the fixture stops it and its workers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from sx.processors import JobSpec
from sx.scheduler._clock import ManualClock
from sx.scheduler.store import Group, Namespace
from sx.scheduler.store.sql import SqlStore, sqlite_url
from tests.scheduler.dispatch.test_harness import APP_KEY, GROUP, NS, Setup


@pytest.fixture
async def setup(tmp_path: Path) -> AsyncIterator[Setup]:
    store = SqlStore(sqlite_url(tmp_path))
    await store.start()
    await store.create_namespace(Namespace(id=NS, name="test namespace"))
    await store.create_group(Group(namespace=NS, group_id=GROUP, app_key=APP_KEY))
    job = await store.create_job(
        namespace=NS,
        group_id=GROUP,
        spec=JobSpec(name="demo-job", class_name="demo", parameters="p=1"),
        enabled=True,
        managed=False,
        next_fire_time=None,
    )
    state = Setup(store=store, clock=ManualClock(datetime.now(UTC)), job=job)
    try:
        yield state
    finally:
        await state.stop_dispatcher()
        await store.close()
