"""The Scheduler gRPC service, a thin adapter: it reads the stream and requests and delegates to the
worker sessions and the task RPCs; and the TLS credentials of the scheduler's gRPC server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc

from sx.protos.v1 import scheduler_pb2, scheduler_pb2_grpc
from sx.scheduler.dispatch._registry import CloseStream
from sx.scheduler.dispatch._sessions import WorkerSessions
from sx.scheduler.dispatch._task_rpcs import TaskRpcs

__all__ = ["SchedulerServicer", "server_credentials"]


def server_credentials(*, cert: bytes, key: bytes, client_ca: bytes | None) -> grpc.ServerCredentials:
    """TLS credentials for the scheduler's gRPC server (PEM bytes); with ``client_ca`` workers must
    present a certificate signed by it (mutual TLS)."""
    if not cert:
        raise ValueError("cert='': a PEM server certificate is required")
    if not key:
        raise ValueError("key='': a PEM private key is required")
    return grpc.ssl_server_credentials(
        [(key, cert)], root_certificates=client_ca, require_client_auth=client_ca is not None
    )


class SchedulerServicer(scheduler_pb2_grpc.SchedulerServicer):
    """The Scheduler gRPC service: one Connect stream per worker, and the parallel-mode task calls."""

    def __init__(self, sessions: WorkerSessions, tasks: TaskRpcs) -> None:
        self._sessions = sessions
        self._tasks = tasks

    async def Connect(
        self, request_iterator: Any, context: Any
    ) -> AsyncIterator[scheduler_pb2.SchedulerMessage]:
        sessions = self._sessions
        messages: AsyncIterator[scheduler_pb2.WorkerMessage] = request_iterator.__aiter__()
        try:
            first = await asyncio.wait_for(anext(messages), timeout=sessions.register_timeout)
        except StopAsyncIteration:
            return
        except TimeoutError:
            await context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, "no register message arrived in time")
            return
        kind = first.WhichOneof("body")
        if kind != "register":
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, f"the first message must be register, got {kind}"
            )
        await sessions.authenticate(first.register, context)
        session = sessions.new_session(first.register)
        reader: asyncio.Task[None] | None = None
        try:
            await sessions.attach(session, list(first.register.running_instance_ids))
            yield sessions.registered_message(session)
            reader = asyncio.create_task(sessions.read_loop(session, messages))
            while True:
                item = await session.outbox.get()
                if isinstance(item, CloseStream):
                    if item.code_name:
                        await context.abort(getattr(grpc.StatusCode, item.code_name), item.message)
                    return
                yield item
        finally:
            if reader is not None:
                reader.cancel()
            sessions.detach(session, grace=True)

    # -- the server-side subtask store of parallel instances -------------------------------------
    async def LoadTasks(
        self, request: scheduler_pb2.LoadTasksRequest, context: Any
    ) -> scheduler_pb2.LoadTasksReply:
        tasks = await self._tasks.load_tasks(request.caller, request.instance_id, context)
        return scheduler_pb2.LoadTasksReply(tasks=tasks)

    async def CreateTasks(
        self, request: scheduler_pb2.CreateTasksRequest, context: Any
    ) -> scheduler_pb2.TasksReply:
        affected = await self._tasks.create_tasks(request, context)
        return scheduler_pb2.TasksReply(affected=affected)

    async def UpdateTasks(
        self, request: scheduler_pb2.UpdateTasksRequest, context: Any
    ) -> scheduler_pb2.TasksReply:
        affected = await self._tasks.update_tasks(request, context)
        return scheduler_pb2.TasksReply(affected=affected)

    async def QueryTasks(
        self, request: scheduler_pb2.QueryTasksRequest, context: Any
    ) -> scheduler_pb2.QueryTasksReply:
        return await self._tasks.query_tasks(request.caller, request.instance_id, context)
