"""Instance logs in the store (`InstanceLogStore`) on SQLite and PostgreSQL (the `store` fixture): order
and numbering, filters, the per-instance cap with its "truncated" line, a group's lines only, removal
with the instance history, and the scheduler's writer that queues workers' batches."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from sx.processors import InstanceStatus, JobSpec, TimeType, TriggerType
from sx.protos.v1 import scheduler_pb2
from sx.scheduler.dispatch._log_writer import WRITE_LINES, InstanceLogWriter
from sx.scheduler.store import Instance, InstanceChange, LogLine, NewInstance, NewLogLines
from sx.scheduler.store.sql import SqlStore
from tests.scheduler.store._migrations import migrate

T0 = datetime(2030, 1, 1, tzinfo=UTC)
T0_MS = int(T0.timestamp() * 1000)


async def _instance(store: SqlStore, job_id: int | None = None, *, group_id: str = "g") -> Instance:
    if job_id is None:
        job = await store.create_job(
            namespace="ns",
            group_id=group_id,
            spec=JobSpec(name=f"job-{group_id}", class_name="demo:Proc"),
            enabled=True,
            managed=False,
            next_fire_time=None,
        )
        job_id = job.id
    return await store.create_instance(
        NewInstance(
            job_id=job_id,
            namespace="ns",
            group_id=group_id,
            status=InstanceStatus.RUNNING,
            trigger_type=TriggerType.API,
            time_type=TimeType.API,
            schedule_time=T0,
            data_time=T0,
        )
    )


def _lines(
    instance_id: int,
    count: int,
    *,
    start: int = 0,
    level: int = logging.INFO,
    worker_id: str = "w1",
    task_id: int = 0,
    task_name: str = "",
) -> NewLogLines:
    return NewLogLines(
        instance_id,
        worker_id,
        [T0_MS + n for n in range(count)],
        [level] * count,
        [f"line {start + n}" for n in range(count)],
        [task_id] * count,
        [task_name] * count,
    )


async def test_lines_are_numbered_in_order_and_filtered(store: SqlStore) -> None:
    one, two = await _instance(store), None
    two = await _instance(store, one.job_id)
    failed = NewLogLines(one.id, "w2", [T0_MS + 1], [logging.ERROR], ["failed"], [7], ["part"])
    mixed = [_lines(one.id, 2), _lines(two.id, 1), failed]
    assert await store.append_instance_logs("ns", "g", mixed, max_lines=100) == 4
    lines = await store.read_instance_log(one.id)
    assert [(line.seq, line.message) for line in lines] == [(1, "line 0"), (2, "line 1"), (3, "failed")]
    assert lines[2].worker_id == "w2" and lines[2].task_id == 7
    assert lines[2].time == T0 + timedelta(milliseconds=1)
    assert [line.message for line in await store.read_instance_log(two.id)] == ["line 0"]
    assert [line.seq for line in await store.read_instance_log(one.id, after=1, limit=1)] == [2]
    assert [line.message for line in await store.read_instance_log(one.id, min_level=logging.WARNING)] == [
        "failed"
    ]
    assert [line.seq for line in await store.read_instance_log(one.id, task_id=7)] == [3]
    assert [line.seq for line in await store.read_instance_log(one.id, task_name="part")] == [3]
    await store.append_instance_logs("ns", "g", [_lines(one.id, 1, start=2)], max_lines=100)
    assert [line.seq for line in await store.read_instance_log(one.id, after=3)] == [4]


async def test_lines_of_another_group_or_a_missing_instance_are_dropped(store: SqlStore) -> None:
    mine = await _instance(store)
    other = await _instance(store, group_id="other")
    lines = [_lines(mine.id, 1), _lines(other.id, 1), _lines(999_999, 1)]
    assert await store.append_instance_logs("ns", "g", lines, max_lines=100) == 1
    assert await store.read_instance_log(other.id) == []


async def test_the_cap_keeps_one_truncated_line_counting_what_was_dropped(store: SqlStore) -> None:
    instance = await _instance(store)
    assert await store.append_instance_logs("ns", "g", [_lines(instance.id, 4)], max_lines=5) == 4
    assert await store.append_instance_logs("ns", "g", [_lines(instance.id, 3, start=4)], max_lines=5) == 1
    assert await store.append_instance_logs("ns", "g", [_lines(instance.id, 10, start=7)], max_lines=5) == 0
    lines = await store.read_instance_log(instance.id)
    assert [line.message for line in lines[:5]] == [f"line {n}" for n in range(5)]
    assert len(lines) == 6 and lines[5].level == logging.WARNING
    assert lines[5].message.startswith("truncated: 12 lines dropped")


async def test_logs_go_with_the_instance_history(store: SqlStore) -> None:
    old = await _instance(store)
    new = await _instance(store, old.job_id)
    await store.append_instance_logs("ns", "g", [_lines(old.id, 2), _lines(new.id, 2)], max_lines=100)
    for instance in (old, new):
        change = InstanceChange(status=InstanceStatus.SUCCESS, end_time=T0 + timedelta(minutes=1))
        assert await store.update_instance(instance.id, change, only_if_status=[InstanceStatus.RUNNING])
    assert await store.prune_instances(old.job_id, keep=1) == 1
    assert await store.read_instance_log(old.id) == []
    assert len(await store.read_instance_log(new.id)) == 2
    await store.delete_job(old.job_id)
    assert await store.read_instance_log(new.id) == []


def _batch(instance_id: int, count: int) -> scheduler_pb2.LogBatch:
    return scheduler_pb2.LogBatch(
        instance_ids=[instance_id] * count,
        job_ids=[1] * count,
        times_ms=[1_900_000_000_000] * count,
        levels=[logging.INFO] * count,
        task_ids=[0] * count,
        task_names=[""] * count,
        messages=[f"m{n}" for n in range(count)],
    )


async def test_the_writer_stores_batches_and_counts_what_its_full_queue_dropped(store: SqlStore) -> None:
    instance = await _instance(store)
    writer = InstanceLogWriter(store, max_lines=100, queue_lines=5)
    writer.offer("ns", "g", "w1", _batch(instance.id, 3))
    writer.offer("ns", "g", "w1", _batch(instance.id, 4))  # over the queue bound: dropped, counted
    malformed = _batch(instance.id, 1)
    del malformed.levels[:]
    writer.offer("ns", "g", "w1", malformed)  # columns of different lengths: ignored
    await writer.start()
    await writer.stop()  # stores what is queued before it returns
    lines = await store.read_instance_log(instance.id)
    assert [line.message for line in lines[:3]] == ["m0", "m1", "m2"] and lines[0].worker_id == "w1"
    assert lines[0].time == datetime.fromtimestamp(1_900_000_000, UTC)
    assert lines[3].level == logging.WARNING and lines[3].message.startswith("4 lines dropped")


async def test_the_writer_reads_columns_sent_once_for_the_whole_batch(store: SqlStore) -> None:
    instance = await _instance(store)
    writer = InstanceLogWriter(store, max_lines=100, queue_lines=5)
    shared = scheduler_pb2.LogBatch(
        instance_id=instance.id,
        job_id=instance.job_id,
        task_name="part",
        times_ms=[1_900_000_000_000] * 3,
        levels=[logging.INFO] * 3,
        task_ids=[5, 6, 7],
        messages=["a", "b", "c"],
    )
    writer.offer("ns", "g", "w1", shared)
    writer.offer("ns", "g", "w1", shared)  # over the queue bound: dropped, counted for its instance
    await writer.start()
    await writer.stop()
    lines = await store.read_instance_log(instance.id)
    assert [(line.message, line.task_id, line.task_name) for line in lines[:3]] == [
        ("a", 5, "part"),
        ("b", 6, "part"),
        ("c", 7, "part"),
    ]
    assert lines[3].message.startswith("3 lines dropped")


@pytest.mark.parametrize("max_lines", [0, -1])
async def test_a_cap_below_one_is_refused(store: SqlStore, max_lines: int) -> None:
    with pytest.raises(ValueError, match="max_lines"):
        await store.append_instance_logs("ns", "g", [], max_lines=max_lines)


async def test_the_writer_stores_a_batch_bigger_than_a_transaction_whole_and_in_order(
    store: SqlStore,
) -> None:
    instance = await _instance(store)
    writer = InstanceLogWriter(store, max_lines=10 * WRITE_LINES)
    writer.offer("ns", "g", "w1", _batch(instance.id, 2 * WRITE_LINES + 3))
    writer.offer("ns", "g", "w1", _batch(instance.id, 2))
    await writer.flush()
    lines = await store.read_instance_log(instance.id, limit=1000, after=2 * WRITE_LINES)
    assert [(line.seq, line.message) for line in lines] == [
        (2 * WRITE_LINES + 1, f"m{2 * WRITE_LINES}"),
        (2 * WRITE_LINES + 2, f"m{2 * WRITE_LINES + 1}"),
        (2 * WRITE_LINES + 3, f"m{2 * WRITE_LINES + 2}"),
        (2 * WRITE_LINES + 4, "m0"),
        (2 * WRITE_LINES + 5, "m1"),
    ]
    assert writer.stored == 2 * WRITE_LINES + 5


async def test_reads_page_across_many_blocks_and_skip_blocks_below_the_level(store: SqlStore) -> None:
    instance = await _instance(store)
    # 40 blocks of 3 lines (more than one query's worth of blocks); every tenth block holds an ERROR of
    # its own subtask.
    for n in range(40):
        block = _lines(instance.id, 3, start=3 * n, task_id=n, level=logging.ERROR if n % 10 == 9 else 20)
        assert await store.append_instance_logs("ns", "g", [block], max_lines=1000) == 3
    everything = await store.read_instance_log(instance.id, limit=1000)
    assert [line.seq for line in everything] == list(range(1, 121))
    assert [line.message for line in everything] == [f"line {n}" for n in range(120)]
    # From the middle of a block, across block boundaries.
    page = await store.read_instance_log(instance.id, after=58, limit=5)
    assert [line.seq for line in page] == [59, 60, 61, 62, 63]
    errors = await store.read_instance_log(instance.id, min_level=logging.ERROR, limit=1000)
    assert [line.task_id for line in errors] == [9] * 3 + [19] * 3 + [29] * 3 + [39] * 3
    assert [line.seq for line in await store.read_instance_log(instance.id, task_id=35)] == [106, 107, 108]
    later = await store.read_instance_log(instance.id, after=110, min_level=logging.ERROR, limit=2)
    assert [line.seq for line in later] == [118, 119]
    assert await store.read_instance_log(instance.id, after=120) == []


async def test_lines_survive_the_move_into_blocks_and_back(store: SqlStore, store_url: str) -> None:
    """Migration 0010 (a row per line to blocks): a store downgraded to 0009 expands its blocks into lines,
    and upgrading again makes them blocks, numbered and filled as before, the "truncated" line too."""
    instance = await _instance(store)
    await store.append_instance_logs(
        "ns",
        "g",
        [
            _lines(instance.id, 4, worker_id="w1"),
            _lines(instance.id, 3, worker_id="w2", task_id=5, task_name="t"),
        ],
        max_lines=6,
    )
    before = await store.read_instance_log(instance.id, limit=100)
    assert len(before) == 7 and before[-1].message.startswith("truncated: 1 lines dropped")
    async with store.engine.begin() as conn:
        await conn.run_sync(migrate, "downgrade", "0009")
        count = await conn.execute(sa.text("SELECT count(*) FROM sx_instance_logs"))
        assert count.scalar() == 7
    await store.close()
    again = SqlStore(store_url)
    await again.start()  # upgrades to head
    try:
        assert await again.read_instance_log(instance.id, limit=100) == before
        assert await again.append_instance_logs("ns", "g", [_lines(instance.id, 2)], max_lines=6) == 0
        lines = await again.read_instance_log(instance.id, after=6)
        assert [line.message[:24] for line in lines] == ["truncated: 3 lines dropp"]
    finally:
        await again.close()


async def test_the_writer_splits_a_batch_of_several_instances_keeping_each_ones_order(
    store: SqlStore,
) -> None:
    one = await _instance(store)
    two = await _instance(store, one.job_id)
    mixed = scheduler_pb2.LogBatch(
        instance_ids=[one.id, two.id, one.id, two.id, one.id],
        job_id=one.job_id,
        times_ms=[1_900_000_000_000 + n for n in range(5)],
        levels=[logging.INFO, logging.INFO, logging.ERROR, logging.INFO, logging.INFO],
        task_ids=[0] * 5,
        task_name="",
        messages=["a1", "b1", "a2", "b2", "a3"],
    )
    writer = InstanceLogWriter(store, max_lines=100)
    writer.offer("ns", "g", "w1", mixed)
    await writer.flush()
    first = await store.read_instance_log(one.id)
    assert [(line.seq, line.message, line.level) for line in first] == [
        (1, "a1", logging.INFO),
        (2, "a2", logging.ERROR),
        (3, "a3", logging.INFO),
    ]
    assert first[1].time == datetime.fromtimestamp(1_900_000_000.002, UTC)
    assert [line.message for line in await store.read_instance_log(two.id)] == ["b1", "b2"]


def _shared_batch(
    instance_id: int, job_id: int, count: int, *, per_line_names: bool = False
) -> scheduler_pb2.LogBatch:
    """A batch as a worker sends one instance's lines: the instance, job and (unless per line) task name
    once; every fifth line an ERROR."""
    batch = scheduler_pb2.LogBatch(
        instance_id=instance_id,
        job_id=job_id,
        times_ms=[T0_MS + n for n in range(count)],
        levels=[logging.ERROR if n % 5 == 4 else logging.INFO for n in range(count)],
        task_ids=[100 + n for n in range(count)],
        messages=[f"line {n} é" for n in range(count)],
    )
    if per_line_names:
        batch.task_names.extend(f"name {n % 3}" for n in range(count))
    else:
        batch.task_name = "part"
    return batch


async def _block_forms(store: SqlStore, instance_id: int) -> list[tuple[int, int, str]]:
    """(first line, lines, "packed" or "json") of each stored block of the instance, in order."""
    query = sa.text(
        "SELECT first_seq, line_count, packed IS NOT NULL, lines IS NOT NULL FROM sx_instance_log_blocks"
        " WHERE instance_id = :id ORDER BY first_seq"
    )
    async with store.engine.connect() as conn:
        rows = (await conn.execute(query, {"id": instance_id})).all()
    assert all(bool(packed) != bool(json) for _, _, packed, json in rows), "a block holds one form"
    return [(first, count, "packed" if packed else "json") for first, count, packed, _ in rows]


async def test_a_whole_batch_of_one_instance_is_kept_as_it_came_and_reads_as_its_json_twin(
    store: SqlStore,
) -> None:
    packed, twin = await _instance(store), None
    twin = await _instance(store, packed.job_id)
    writer = InstanceLogWriter(store, max_lines=1000)
    batches = [
        _shared_batch(packed.id, packed.job_id, 7),
        _shared_batch(packed.id, packed.job_id, 6, per_line_names=True),
    ]
    for batch in batches:
        writer.offer("ns", "g", "w1", batch)
    await writer.flush()
    assert await _block_forms(store, packed.id) == [(1, 7, "packed"), (8, 6, "packed")]
    # The same lines given as plain columns are stored as JSON: both forms read back alike.
    columns = [
        NewLogLines(
            twin.id,
            "w1",
            list(batch.times_ms),
            list(batch.levels),
            list(batch.messages),
            list(batch.task_ids),
            list(batch.task_names) or [batch.task_name] * len(batch.messages),
        )
        for batch in batches
    ]
    assert await store.append_instance_logs("ns", "g", columns, max_lines=1000) == 13
    assert await _block_forms(store, twin.id) == [(1, 7, "json"), (8, 6, "json")]

    def seen(lines: list[LogLine]) -> list[tuple[int, int, int, str, str, int, str]]:
        return [(n.seq, n.time_ms, n.level, n.worker_id, n.message, n.task_id, n.task_name) for n in lines]

    stored = await store.read_instance_log(packed.id, limit=100)
    assert seen(stored) == seen(await store.read_instance_log(twin.id, limit=100))
    assert seen(stored)[:2] == [
        (1, T0_MS, logging.INFO, "w1", "line 0 é", 100, "part"),
        (2, T0_MS + 1, logging.INFO, "w1", "line 1 é", 101, "part"),
    ]
    assert [n.task_name for n in stored[7:10]] == ["name 0", "name 1", "name 2"]
    errors = await store.read_instance_log(packed.id, min_level=logging.ERROR)
    assert [(n.seq, n.message) for n in errors] == [(5, "line 4 é"), (12, "line 4 é")]
    assert [n.seq for n in await store.read_instance_log(packed.id, task_name="name 1")] == [9, 12]
    assert [n.seq for n in await store.read_instance_log(packed.id, task_id=103)] == [4, 11]
    assert [n.seq for n in await store.read_instance_log(packed.id, after=5, limit=3)] == [6, 7, 8]


async def test_a_batch_over_the_cap_keeps_its_first_lines_as_json_and_counts_the_rest(
    store: SqlStore,
) -> None:
    instance = await _instance(store)
    writer = InstanceLogWriter(store, max_lines=3)
    writer.offer("ns", "g", "w1", _shared_batch(instance.id, instance.job_id, 5))
    await writer.flush()
    assert await _block_forms(store, instance.id) == [(1, 3, "json"), (4, 1, "json")]
    lines = await store.read_instance_log(instance.id)
    assert [n.message for n in lines[:3]] == ["line 0 é", "line 1 é", "line 2 é"]
    assert lines[3].message.startswith("truncated: 2 lines dropped")


async def test_batches_that_do_not_fit_one_transaction_together_each_stay_whole(store: SqlStore) -> None:
    instance = await _instance(store)
    writer = InstanceLogWriter(store, max_lines=10 * WRITE_LINES)
    size = WRITE_LINES - 1
    for _ in range(3):
        writer.offer("ns", "g", "w1", _shared_batch(instance.id, instance.job_id, size))
    await writer.flush()
    assert await _block_forms(store, instance.id) == [
        (1, size, "packed"),
        (size + 1, size, "packed"),
        (2 * size + 1, size, "packed"),
    ]
    assert writer.stored == 3 * size
    last = await store.read_instance_log(instance.id, after=3 * size - 1)
    assert [(n.seq, n.message) for n in last] == [(3 * size, f"line {size - 1} é")]


async def test_packed_blocks_become_json_on_downgrade_and_read_alike_after(
    store: SqlStore, store_url: str
) -> None:
    """Migration 0011: a store downgraded to 0010 turns its packed blocks into JSON ones; upgraded again,
    every line reads as before."""
    instance = await _instance(store)
    writer = InstanceLogWriter(store, max_lines=100)
    writer.offer("ns", "g", "w1", _shared_batch(instance.id, instance.job_id, 4))
    writer.offer("ns", "g", "w2", _shared_batch(instance.id, instance.job_id, 3, per_line_names=True))
    await writer.flush()
    await store.append_instance_logs("ns", "g", [_lines(instance.id, 2, worker_id="w3")], max_lines=100)
    assert [form for _, _, form in await _block_forms(store, instance.id)] == ["packed", "packed", "json"]
    before = await store.read_instance_log(instance.id, limit=100)
    assert len(before) == 9
    async with store.engine.begin() as conn:
        await conn.run_sync(migrate, "downgrade", "0010")
        rows = await conn.execute(sa.text("SELECT count(*) FROM sx_instance_log_blocks WHERE lines IS NULL"))
        assert rows.scalar() == 0
    await store.close()
    again = SqlStore(store_url)
    await again.start()  # upgrades to head
    try:
        assert [form for _, _, form in await _block_forms(again, instance.id)] == ["json"] * 3
        assert await again.read_instance_log(instance.id, limit=100) == before
    finally:
        await again.close()
