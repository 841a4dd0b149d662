"""The server-side subtask store of parallel-mode instances (LoadTasks, CreateTasks, UpdateTasks,
QueryTasks).

Only the worker holding an instance (its master) reads and writes the instance's tasks. Worker ids are
not secret, so each call also carries a proof that the caller knows the group's app key, made for that
very request; each proof is accepted once.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

import grpc

from sx.processors import TaskStatus
from sx.protos import ProofChecker, TaskRequest, check_task_request
from sx.protos.v1 import scheduler_pb2
from sx.scheduler.dispatch._registry import WorkerKey
from sx.scheduler.dispatch._state import DispatchState
from sx.scheduler.store import AccessStore, InstanceStore, NewTask, ParallelTaskStore, TaskStatusChange

__all__ = ["TaskRpcStore", "TaskRpcs"]


class TaskRpcStore(AccessStore, InstanceStore, ParallelTaskStore, Protocol):
    """What the parallel task RPCs read and write: the caller's group, the instance, and its task records."""


log = logging.getLogger("sx.scheduler.dispatch")

# A parallel instance's tasks are read whole (the mode caps them at a few hundred).
_TASKS_LOAD_LIMIT = 100_000


class TaskRpcs:
    """The task calls of an instance's master, checked against who holds the instance now."""

    def __init__(self, store: TaskRpcStore, *, state: DispatchState) -> None:
        self._store = store
        self._state = state
        self._proofs = ProofChecker()

    async def _check_caller(self, rpc: str, request: TaskRequest, context: Any) -> None:
        # Worker ids are not secret: the caller proves it knows the group's app key.
        caller, instance_id = request.caller, request.instance_id
        group = await self._store.get_group(caller.namespace, caller.group_id)
        why = (
            "no such group"
            if group is None
            else check_task_request(self._proofs, group.app_key, rpc, request)
        )
        if why is not None:
            await context.abort(
                grpc.StatusCode.UNAUTHENTICATED,
                f"caller.proof: worker {caller.worker_id!r} of group {caller.group_id!r}: {why}",
            )
        key = WorkerKey(caller.namespace, caller.group_id, caller.worker_id)
        if not self._state.holds(key, instance_id):
            await context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                f"instance_id={instance_id}: worker {caller.worker_id!r} does not hold this instance",
            )

    async def load_tasks(
        self, request: scheduler_pb2.LoadTasksRequest, context: Any
    ) -> list[scheduler_pb2.StoredTask]:
        """Every task of the instance; a retry's first load takes over its predecessor's tasks."""
        await self._check_caller("LoadTasks", request, context)
        instance_id = request.instance_id
        page = await self._store.list_tasks(instance_id, limit=_TASKS_LOAD_LIMIT)
        if page.total == 0:
            instance = await self._store.get_instance(instance_id)
            if instance is not None and instance.retry_of is not None:
                # A retry of an instance (maxAttempt): its successful tasks are not run again.
                copied = await self._store.copy_tasks(instance.retry_of, instance_id)
                if copied:
                    log.info(
                        "instance %d: %d task(s) taken over from instance %d",
                        instance_id,
                        copied,
                        instance.retry_of,
                    )
                    page = await self._store.list_tasks(instance_id, limit=_TASKS_LOAD_LIMIT)
        return [
            scheduler_pb2.StoredTask(
                task_id=t.task_id,
                task_name=t.name,
                payload=t.payload,
                parent_id=t.parent_id,
                batch_seq=t.batch_seq,
                status=int(t.status),
                worker_addr=t.worker_addr,
                result=t.result,
                attempt=t.attempt,
            )
            for t in page.items
        ]

    async def create_tasks(self, request: scheduler_pb2.CreateTasksRequest, context: Any) -> int:
        await self._check_caller("CreateTasks", request, context)
        news = [
            NewTask(
                task_id=t.task_id,
                name=t.task_name,
                payload=t.payload,
                parent_id=t.parent_id,
                batch_seq=t.batch_seq,
            )
            for t in request.tasks
        ]
        return await self._store.create_tasks(request.instance_id, news)

    async def update_tasks(self, request: scheduler_pb2.UpdateTasksRequest, context: Any) -> int:
        await self._check_caller("UpdateTasks", request, context)
        changes: list[TaskStatusChange] = []
        for group in request.groups:
            try:
                status = TaskStatus(group.status)
            except ValueError:
                await context.abort(
                    grpc.StatusCode.INVALID_ARGUMENT, f"groups.status={group.status}: not a task status (1-5)"
                )
                raise
            if group.results and len(group.results) != len(group.task_ids):
                await context.abort(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"groups.results: {len(group.results)} for {len(group.task_ids)} task id(s)",
                )
            changes.append(
                TaskStatusChange(
                    status=status,
                    task_ids=tuple(group.task_ids),
                    results=tuple(group.results),
                    worker_id=group.worker_id,
                    worker_addr=group.worker_addr,
                )
            )
        return await self._store.update_task_statuses(request.instance_id, changes)

    async def query_tasks(
        self, request: scheduler_pb2.QueryTasksRequest, context: Any
    ) -> scheduler_pb2.QueryTasksReply:
        await self._check_caller("QueryTasks", request, context)
        instance_id = request.instance_id
        counts = await self._store.count_tasks(instance_id)
        reply = scheduler_pb2.QueryTasksReply(counts={int(s): n for s, n in counts.items()})
        if counts.get(TaskStatus.INIT):
            waiting = await self._store.list_tasks(
                instance_id, statuses=[TaskStatus.INIT], limit=_TASKS_LOAD_LIMIT
            )
            reply.init_task_ids.extend(t.task_id for t in waiting.items)
        return reply
