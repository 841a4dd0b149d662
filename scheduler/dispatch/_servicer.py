"""The Scheduler gRPC service, a thin adapter: it reads the stream and requests and delegates to the
worker registration, sessions and stream reader, and the task RPCs; and the TLS credentials of the
scheduler's gRPC server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc

from sx.protos import take_batch
from sx.protos.v1 import scheduler_pb2, scheduler_pb2_grpc
from sx.scheduler.dispatch._registration import WorkerRegistration
from sx.scheduler.dispatch._registry import CloseStream
from sx.scheduler.dispatch._sessions import WorkerSessions
from sx.scheduler.dispatch._stream_reader import WorkerStreamReader
from sx.scheduler.dispatch._task_rpcs import TaskRpcs

__all__ = ["SchedulerServicer", "server_credentials"]

_ALONE = frozenset({"redirect"})
"""Messages sent alone, never in a batch: a redirect ends what the worker reads of the stream."""


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

    def __init__(
        self,
        registration: WorkerRegistration,
        sessions: WorkerSessions,
        stream_reader: WorkerStreamReader,
        tasks: TaskRpcs,
    ) -> None:
        self._registration = registration
        self._sessions = sessions
        self._stream_reader = stream_reader
        self._tasks = tasks

    async def Connect(
        self, request_iterator: Any, context: Any
    ) -> AsyncIterator[scheduler_pb2.SchedulerMessage]:
        registration = self._registration
        sessions = self._sessions
        messages: AsyncIterator[scheduler_pb2.WorkerMessage] = request_iterator.__aiter__()
        first = await self._expect(messages, "register", "the first message", context)
        if first is None:
            return
        register = first.register
        # Registration is challenge-response: the app key itself never travels.
        challenge = await registration.challenge(register, context)
        yield scheduler_pb2.SchedulerMessage(challenge=challenge)
        second = await self._expect(messages, "answer", "the answer to the challenge", context)
        if second is None:
            return
        await registration.authenticate(register, challenge, second.answer, context)
        redirect = await registration.redirect(register)
        if redirect is not None:  # another replica dispatches this group
            yield redirect
            return
        session = registration.new_session(register)
        reader: asyncio.Task[None] | None = None
        try:
            await sessions.attach(
                session, list(register.running_instance_ids), list(register.task_file_instance_ids)
            )
            yield registration.registered_message(session)
            reader = asyncio.create_task(self._stream_reader.read_loop(session, messages))
            outbox = session.outbox
            taken: list[scheduler_pb2.SchedulerMessage | CloseStream] = []  # taken, not yet sent
            while True:
                item = taken.pop() if taken else await outbox.get()
                if isinstance(item, CloseStream):
                    if item.code_name:
                        await context.abort(getattr(grpc.StatusCode, item.code_name), item.message)
                    return
                if not session.takes_batches:
                    yield item
                    continue
                batch, taken = take_batch(outbox, item, alone=_ALONE)
                if len(batch) == 1:
                    yield batch[0]
                else:
                    yield scheduler_pb2.SchedulerMessage(
                        batch=scheduler_pb2.SchedulerMessages(messages=batch)
                    )
        finally:
            if reader is not None:
                reader.cancel()
            sessions.detach(session, grace=True)

    async def _expect(
        self, messages: AsyncIterator[scheduler_pb2.WorkerMessage], kind: str, what: str, context: Any
    ) -> scheduler_pb2.WorkerMessage | None:
        """The next message, which must be a ``kind`` and arrive within the register timeout; None when
        the worker ended the stream first."""
        try:
            message = await asyncio.wait_for(anext(messages), timeout=self._registration.register_timeout)
        except StopAsyncIteration:
            return None
        except TimeoutError:
            await context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, f"{what} did not arrive in time")
            return None
        got = message.WhichOneof("body")
        if got != kind:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"{what} must be {kind}, got {got}")
        return message

    # -- the server-side subtask store of parallel instances -------------------------------------
    async def LoadTasks(
        self, request: scheduler_pb2.LoadTasksRequest, context: Any
    ) -> scheduler_pb2.LoadTasksReply:
        tasks = await self._tasks.load_tasks(request, context)
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
        return await self._tasks.query_tasks(request, context)
