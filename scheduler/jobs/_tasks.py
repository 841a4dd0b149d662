"""The subtasks of parallel instances: listing them, and running failed ones again.

Parallel instances keep every subtask in the scheduler's store (at most 300 per instance), so each can
be seen and retried one by one. Retrying resets FAILED tasks to INIT. A running instance's master
notices (it asks the scheduler for the task state while running and before finishing) and runs them
again. A finished instance is re-opened: it goes back to WAITING and is handed to dispatch again; the
worker's master runs only the reset tasks (the others stay finished) and then reduces again over
every task.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from sx.processors import ExecuteMode, InstanceStatus, TaskStatus
from sx.scheduler._errors import BadRequest, Conflict, NotFound
from sx.scheduler.jobs._lookup import page_offset
from sx.scheduler.jobs._service import JobService
from sx.scheduler.store import Instance, InstanceChange, InstanceStore, Job, Page, ParallelTaskStore, Task

__all__ = ["TaskRetry", "TaskService", "TaskServiceStore"]

_REOPENABLE = (InstanceStatus.FAILED, InstanceStatus.SUCCESS)


class TaskServiceStore(InstanceStore, ParallelTaskStore, Protocol):
    """What the task service reads and writes."""


@dataclass(frozen=True, slots=True)
class TaskRetry:
    """What a retry did: the tasks reset, whether the instance was re-opened, its status now."""

    instance_id: int
    task_ids: list[int]
    reopened: bool
    status: InstanceStatus


class TaskService:
    """Subtask operations on the parallel instances of ``jobs``' jobs; ``hand_over`` gives a re-opened
    instance to dispatch."""

    def __init__(
        self, store: TaskServiceStore, *, jobs: JobService, hand_over: Callable[[Instance], Awaitable[None]]
    ) -> None:
        self._store = store
        self._jobs = jobs
        self._hand_over = hand_over

    async def parallel_instance(self, namespace: str, group_id: str, job: Job, instance_id: int) -> Instance:
        """The instance of ``job`` (found in that namespace and group); BadRequest unless the job runs
        in parallel mode, the only one whose subtasks the scheduler keeps."""
        instance = await self._jobs.get_instance(namespace, group_id, job.id, instance_id)
        mode = job.spec.execute_mode
        if mode is not ExecuteMode.PARALLEL:
            raise BadRequest(
                "instanceId",
                instance_id,
                f"job {job.id} runs in execute mode {mode.value!r}: only parallel instances keep "
                "their subtasks in the scheduler",
            )
        return instance

    async def list_tasks(
        self,
        instance: Instance,
        *,
        statuses: Sequence[TaskStatus] | None = None,
        page_num: int = 1,
        page_size: int = 20,
    ) -> Page[Task]:
        """A page of a parallel instance's tasks by id, optionally only those of ``statuses``."""
        return await self._store.list_tasks(
            instance.id, statuses=statuses or None, offset=page_offset(page_num, page_size), limit=page_size
        )

    async def retry_tasks(self, instance: Instance, task_ids: list[int]) -> TaskRetry:
        """Reset the FAILED tasks ``task_ids`` of a parallel instance to INIT, re-opening the instance
        when it has finished. NotFound for an unknown task, BadRequest for one not FAILED, Conflict
        when the instance cannot be re-opened (retried already, or changed meanwhile)."""
        ids = task_ids
        store = self._store
        found = {
            t.task_id: t for t in (await store.list_tasks(instance.id, task_ids=ids, limit=len(ids))).items
        }
        unknown = [i for i in ids if i not in found]
        if unknown:
            raise NotFound(
                f"taskIds={','.join(map(str, unknown))}: no such task(s) in instance {instance.id}",
                field="taskIds",
                value=unknown,
            )
        # A finished instance may hold INIT tasks reset just as it ended: those may be retried again.
        allowed = (TaskStatus.FAILED, TaskStatus.INIT) if instance.status.finished else (TaskStatus.FAILED,)
        wrong = [t for t in found.values() if t.status not in allowed]
        if wrong:
            shown = ", ".join(f"{t.task_id} ({t.status.name})" for t in wrong[:10])
            raise BadRequest(
                "taskIds", [t.task_id for t in wrong], f"only FAILED tasks can be retried: {shown}"
            )
        if not instance.status.finished:
            reset = await store.reset_tasks(instance.id, ids, only_if_status=[TaskStatus.FAILED])
            return TaskRetry(instance.id, reset, reopened=False, status=instance.status)
        if instance.status not in _REOPENABLE:
            raise Conflict(
                f"instanceId={instance.id}: status {int(instance.status)} cannot be re-opened",
                field="instanceId",
                value=instance.id,
            )
        retry = await store.find_retry(instance.id)
        if retry is not None:
            raise Conflict(
                f"instanceId={instance.id}: it was retried as instance {retry.id}; retry that one's tasks",
                field="instanceId",
                value=instance.id,
            )
        reset = await store.reset_tasks(instance.id, ids, only_if_status=allowed)
        reopened = await store.update_instance(
            instance.id,
            InstanceChange(
                status=InstanceStatus.WAITING, result="", worker_id="", worker_addr="", executor=""
            ),
            only_if_status=[instance.status],
        )
        if reopened is None:
            raise Conflict(
                f"instanceId={instance.id}: its status changed meanwhile; try again",
                field="instanceId",
                value=instance.id,
            )
        await self._hand_over(reopened)
        return TaskRetry(instance.id, reset, reopened=True, status=reopened.status)
