"""Store contract for the subtasks of parallel instances, on SQLite and PostgreSQL (the `store` fixture)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from sx.processors import InstanceStatus, JobSpec, TaskStatus, TimeType, TriggerType
from sx.scheduler.store import Instance, NewInstance, NewTask, NotFoundError, TaskStatusChange
from sx.scheduler.store.sql import SqlStore

T0 = datetime(2030, 1, 1, tzinfo=UTC)


async def make_instance(store: SqlStore, *, name: str = "par", retry_of: int | None = None) -> Instance:
    job = await store.find_job("ns", "g", name)
    if job is None:
        job = await store.create_job(
            namespace="ns",
            group_id="g",
            spec=JobSpec(name=name, class_name="demo:Proc", execute_mode="parallel"),
            enabled=True,
            managed=False,
            next_fire_time=None,
        )
    return await store.create_instance(
        NewInstance(
            job_id=job.id,
            namespace="ns",
            group_id="g",
            status=InstanceStatus.RUNNING,
            trigger_type=TriggerType.API,
            time_type=TimeType.API,
            schedule_time=T0,
            data_time=T0,
            retry_of=retry_of,
        )
    )


def tasks(*ids: int, name: str = "part", parent: int = 0, seq: int = 1) -> list[NewTask]:
    return [
        NewTask(task_id=i, name=name, payload=f"p{i}".encode(), parent_id=parent, batch_seq=seq) for i in ids
    ]


async def test_create_and_list_tasks(store: SqlStore) -> None:
    instance = await make_instance(store)
    assert await store.create_tasks(instance.id, tasks(0, name="MAP_TASK_ROOT", seq=0)) == 1
    assert await store.create_tasks(instance.id, tasks(1, 2, 3)) == 3
    page = await store.list_tasks(instance.id)
    assert page.total == 4
    assert [t.task_id for t in page.items] == [0, 1, 2, 3]
    first = page.items[1]
    assert (first.name, first.payload, first.status, first.attempt) == ("part", b"p1", TaskStatus.INIT, 0)
    assert (first.parent_id, first.batch_seq, first.result, first.end_time) == (0, 1, "", None)


async def test_create_skips_existing_task_ids(store: SqlStore) -> None:
    instance = await make_instance(store)
    await store.create_tasks(instance.id, tasks(1, 2))
    await store.create_tasks(instance.id, tasks(2, 3))
    page = await store.list_tasks(instance.id)
    assert [t.task_id for t in page.items] == [1, 2, 3]


async def test_create_for_unknown_instance_names_it(store: SqlStore) -> None:
    with pytest.raises(NotFoundError, match="instance_id=987654"):
        await store.create_tasks(987654, tasks(1))


async def test_status_changes_count_attempts_and_keep_finished(store: SqlStore) -> None:
    instance = await make_instance(store)
    await store.create_tasks(instance.id, tasks(1, 2, 3))
    pulled = TaskStatusChange(TaskStatus.PULLED, (1, 2, 3), worker_id="w1", worker_addr="h:1")
    assert await store.update_task_statuses(instance.id, [pulled]) == 3
    assert await store.update_task_statuses(instance.id, [TaskStatusChange(TaskStatus.RUNNING, (1, 2))]) == 2
    done = [
        TaskStatusChange(TaskStatus.SUCCESS, (1,), results=("one",)),
        TaskStatusChange(TaskStatus.FAILED, (2, 3), results=("boom", "bang")),
    ]
    assert await store.update_task_statuses(instance.id, done) == 3
    # A finished task does not move again (a late or repeated status).
    late = [
        TaskStatusChange(TaskStatus.RUNNING, (1,)),
        TaskStatusChange(TaskStatus.SUCCESS, (2,), results=("x",)),
    ]
    assert await store.update_task_statuses(instance.id, late) == 0
    by_id = {t.task_id: t for t in (await store.list_tasks(instance.id)).items}
    assert by_id[1].status is TaskStatus.SUCCESS and by_id[1].result == "one"
    assert by_id[1].worker_addr == "h:1" and by_id[1].attempt == 1
    assert by_id[1].start_time is not None and by_id[1].end_time is not None
    assert by_id[2].status is TaskStatus.FAILED and by_id[2].result == "boom"
    assert by_id[3].result == "bang" and by_id[3].start_time is None
    assert await store.count_tasks(instance.id) == {TaskStatus.SUCCESS: 1, TaskStatus.FAILED: 2}


async def test_results_must_pair_with_task_ids(store: SqlStore) -> None:
    instance = await make_instance(store)
    await store.create_tasks(instance.id, tasks(1, 2))
    with pytest.raises(ValueError, match="results"):
        await store.update_task_statuses(
            instance.id, [TaskStatusChange(TaskStatus.FAILED, (1, 2), results=("only one",))]
        )


async def test_list_filters_by_status_and_ids_and_pages(store: SqlStore) -> None:
    instance = await make_instance(store)
    await store.create_tasks(instance.id, tasks(*range(1, 8)))
    await store.update_task_statuses(
        instance.id, [TaskStatusChange(TaskStatus.FAILED, (2, 4, 6), results=("a", "b", "c"))]
    )
    failed = await store.list_tasks(instance.id, statuses=[TaskStatus.FAILED], offset=1, limit=1)
    assert failed.total == 3
    assert [t.task_id for t in failed.items] == [4]
    chosen = await store.list_tasks(instance.id, task_ids=[1, 6, 99])
    assert [t.task_id for t in chosen.items] == [1, 6]
    assert (await store.list_tasks(instance.id, limit=3)).total == 7
    with pytest.raises(ValueError, match="offset"):
        await store.list_tasks(instance.id, offset=-1)


async def test_reset_only_tasks_in_the_given_statuses(store: SqlStore) -> None:
    instance = await make_instance(store)
    await store.create_tasks(instance.id, tasks(1, 2, 3))
    await store.update_task_statuses(
        instance.id,
        [
            TaskStatusChange(TaskStatus.PULLED, (1, 2, 3), worker_id="w", worker_addr="h:1"),
            TaskStatusChange(TaskStatus.FAILED, (1, 2), results=("x", "y")),
            TaskStatusChange(TaskStatus.SUCCESS, (3,), results=("ok",)),
        ],
    )
    reset = await store.reset_tasks(instance.id, [2, 3, 2, 42], only_if_status=[TaskStatus.FAILED])
    assert reset == [2]
    task = (await store.list_tasks(instance.id, task_ids=[2])).items[0]
    assert (task.status, task.result, task.worker_addr, task.end_time) == (TaskStatus.INIT, "", "", None)
    assert task.attempt == 1  # the attempt count is history: it stays
    # A reset task runs again: its next dispatch counts a second attempt.
    await store.update_task_statuses(
        instance.id, [TaskStatusChange(TaskStatus.PULLED, (2,), worker_id="w2", worker_addr="h:2")]
    )
    again = (await store.list_tasks(instance.id, task_ids=[2])).items[0]
    assert (again.attempt, again.worker_addr) == (2, "h:2")


async def test_copy_to_a_retry_keeps_successes_and_resets_the_rest(store: SqlStore) -> None:
    first = await make_instance(store)
    await store.create_tasks(first.id, tasks(0, name="MAP_TASK_ROOT", seq=0))
    await store.create_tasks(first.id, tasks(1, 2, 3))
    await store.update_task_statuses(
        first.id,
        [
            TaskStatusChange(TaskStatus.PULLED, (0, 1, 2, 3), worker_id="w", worker_addr="h:1"),
            TaskStatusChange(TaskStatus.SUCCESS, (0, 1), results=("root", "one")),
            TaskStatusChange(TaskStatus.FAILED, (2,), results=("boom",)),
        ],
    )
    retry = await make_instance(store, retry_of=first.id)
    assert await store.copy_tasks(first.id, retry.id) == 4
    copied = {t.task_id: t for t in (await store.list_tasks(retry.id)).items}
    assert copied[1].status is TaskStatus.SUCCESS and copied[1].result == "one"
    assert copied[1].payload == b"p1" and copied[1].worker_addr == "h:1"
    assert copied[2].status is TaskStatus.INIT and copied[2].result == "" and copied[2].end_time is None
    assert copied[3].status is TaskStatus.INIT
    assert (copied[3].parent_id, copied[3].batch_seq) == (0, 1)
    # The source is untouched, and a second copy does nothing.
    assert await store.count_tasks(first.id) == {
        TaskStatus.SUCCESS: 2,
        TaskStatus.FAILED: 1,
        TaskStatus.PULLED: 1,
    }
    assert await store.copy_tasks(first.id, retry.id) == 0


async def test_tasks_go_with_their_instance(store: SqlStore) -> None:
    instance = await make_instance(store, name="gone")
    await store.create_tasks(instance.id, tasks(1, 2))
    job = await store.find_job("ns", "g", "gone")
    assert job is not None
    assert await store.delete_job(job.id)
    assert (await store.list_tasks(instance.id)).total == 0
    assert await store.count_tasks(instance.id) == {}
