"""Instance logs in the store (`InstanceLogStore`) on SQLite and PostgreSQL (the `store` fixture): order
and numbering, filters, the per-instance cap with its "truncated" line, a group's lines only, removal
with the instance history, and the scheduler's writer that queues workers' batches."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import pytest

from sx.processors import InstanceStatus, JobSpec, TimeType, TriggerType
from sx.protos.v1 import scheduler_pb2
from sx.scheduler.dispatch._log_writer import WRITE_LINES, InstanceLogWriter
from sx.scheduler.store import Instance, InstanceChange, NewInstance, NewLogLine
from sx.scheduler.store.sql import SqlStore

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


def _lines(instance_id: int, count: int, *, start: int = 0, **fields: object) -> list[NewLogLine]:
    values: dict[str, object] = {"level": logging.INFO, "worker_id": "w1", "time_ms": T0_MS, **fields}
    return [
        NewLogLine(instance_id=instance_id, message=f"line {start + n}", **values)  # type: ignore[arg-type]
        for n in range(count)
    ]


async def test_lines_are_numbered_in_order_and_filtered(store: SqlStore) -> None:
    one, two = await _instance(store), None
    two = await _instance(store, one.job_id)
    mixed = [
        *_lines(one.id, 2),
        *_lines(two.id, 1),
        NewLogLine(one.id, T0_MS + 1, logging.ERROR, "w2", "failed", task_id=7, task_name="part"),
    ]
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
    await store.append_instance_logs("ns", "g", _lines(one.id, 1, start=2), max_lines=100)
    assert [line.seq for line in await store.read_instance_log(one.id, after=3)] == [4]


async def test_lines_of_another_group_or_a_missing_instance_are_dropped(store: SqlStore) -> None:
    mine = await _instance(store)
    other = await _instance(store, group_id="other")
    lines = [*_lines(mine.id, 1), *_lines(other.id, 1), *_lines(999_999, 1)]
    assert await store.append_instance_logs("ns", "g", lines, max_lines=100) == 1
    assert await store.read_instance_log(other.id) == []


async def test_the_cap_keeps_one_truncated_line_counting_what_was_dropped(store: SqlStore) -> None:
    instance = await _instance(store)
    assert await store.append_instance_logs("ns", "g", _lines(instance.id, 4), max_lines=5) == 4
    assert await store.append_instance_logs("ns", "g", _lines(instance.id, 3, start=4), max_lines=5) == 1
    assert await store.append_instance_logs("ns", "g", _lines(instance.id, 10, start=7), max_lines=5) == 0
    lines = await store.read_instance_log(instance.id)
    assert [line.message for line in lines[:5]] == [f"line {n}" for n in range(5)]
    assert len(lines) == 6 and lines[5].level == logging.WARNING
    assert lines[5].message.startswith("truncated: 12 lines dropped")


async def test_logs_go_with_the_instance_history(store: SqlStore) -> None:
    old = await _instance(store)
    new = await _instance(store, old.job_id)
    await store.append_instance_logs("ns", "g", [*_lines(old.id, 2), *_lines(new.id, 2)], max_lines=100)
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
