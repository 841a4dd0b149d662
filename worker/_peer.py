"""The worker-to-worker Peer service, and clients to reach peers (this worker itself in process).

The service hands what it receives to two narrow parts of the worker: the tasks masters start here go to
a ``TaskReceiver`` (the map package's ``TaskRunner``), statuses and map batches to the master this
worker holds for the instance (a ``StatusReceiver``, ``MapReceiver`` for map instances).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import grpc
from grpc import aio

from sx.protos import peer_channel
from sx.protos.v1 import peer_pb2, peer_pb2_grpc

__all__ = [
    "PEER_CALL_TIMEOUT",
    "MapReceiver",
    "PeerApi",
    "PeerClients",
    "PeerService",
    "StatusReceiver",
    "TaskReceiver",
    "is_unreachable",
]

log = logging.getLogger("sx.worker")

PEER_CALL_TIMEOUT = 10.0
"""Seconds a peer call may take; a peer slower than that counts as unreachable."""


class TaskReceiver(Protocol):
    """What runs the tasks masters start on this worker, and answers for them."""

    @property
    def running(self) -> int:
        """Tasks running here now."""
        ...

    def start(self, request: peer_pb2.StartTasksRequest) -> peer_pb2.StartTasksReply:
        """Accept (or refuse) a page of tasks of one instance."""
        ...

    def holds(self, instance_id: int) -> bool:
        """True while tasks of the instance run here or their statuses are still owed."""
        ...

    async def kill(self, instance_id: int, *, task_id: int = 0, reason: str = "") -> int:
        """Stop the instance's tasks here (one task when ``task_id`` is set); returns how many."""
        ...

    async def destroy(self, instance_id: int) -> None:
        """The instance ended on its master: stop what still runs and forget it."""
        ...


class StatusReceiver(Protocol):
    """What a master on this worker does with task statuses and liveness questions."""

    def on_statuses(self, batch: peer_pb2.TaskStatusBatch) -> None: ...


@runtime_checkable
class MapReceiver(Protocol):
    """A map instance's master: it also takes ``ctx.map`` batches."""

    def on_statuses(self, batch: peer_pb2.TaskStatusBatch) -> None: ...

    async def map_tasks(self, request: peer_pb2.MapTasksRequest) -> peer_pb2.MapTasksReply: ...


class PeerService(peer_pb2_grpc.PeerServicer):
    """Serves StartTasks, ReportTaskStatuses, KillInstance, DestroyInstance and CheckAlive.

    ``masters`` finds the master this worker holds for an instance id (or None). ``incarnation`` is
    random per service: a master tells by it that a worker answering on an address is not the process
    it sent tasks to.
    """

    def __init__(
        self, *, tasks: TaskReceiver, masters: Callable[[int], StatusReceiver | None], worker_id: str
    ) -> None:
        self._tasks = tasks
        self._masters = masters
        self._worker_id = worker_id
        self.incarnation = secrets.token_hex(8)

    async def StartTasks(self, request: peer_pb2.StartTasksRequest, context: Any) -> peer_pb2.StartTasksReply:
        reply = self._tasks.start(request)
        reply.incarnation = self.incarnation
        return reply

    async def ReportTaskStatuses(self, request: peer_pb2.TaskStatusBatch, context: Any) -> peer_pb2.Ack:
        master = self._masters(request.instance_id)
        if master is None:
            # The instance ended (or never was ours): the sender should stop re-sending.
            return peer_pb2.Ack(ok=True, message=f"instance {request.instance_id} has no master here")
        master.on_statuses(request)
        return peer_pb2.Ack(ok=True)

    async def MapTasks(self, request: peer_pb2.MapTasksRequest, context: Any) -> peer_pb2.MapTasksReply:
        master = self._masters(request.instance_id)
        if not isinstance(master, MapReceiver):
            return peer_pb2.MapTasksReply(
                accepted=False,
                message=f"instance {request.instance_id} has no map master on worker {self._worker_id}",
            )
        return await master.map_tasks(request)

    async def KillInstance(self, request: peer_pb2.PeerKillRequest, context: Any) -> peer_pb2.Ack:
        killed = await self._tasks.kill(request.instance_id, task_id=request.task_id, reason=request.reason)
        return peer_pb2.Ack(ok=True, message=f"{killed} task(s) stopped")

    async def DestroyInstance(self, request: peer_pb2.DestroyRequest, context: Any) -> peer_pb2.Ack:
        await self._tasks.destroy(request.instance_id)
        return peer_pb2.Ack(ok=True)

    async def CheckAlive(self, request: peer_pb2.CheckAliveRequest, context: Any) -> peer_pb2.CheckAliveReply:
        instance_id = request.instance_id
        is_master = self._masters(instance_id) is not None
        if request.master:
            alive = is_master
        else:
            alive = instance_id == 0 or is_master or self._tasks.holds(instance_id)
        return peer_pb2.CheckAliveReply(
            alive=alive, worker_id=self._worker_id, running=self._tasks.running, incarnation=self.incarnation
        )


class PeerApi(Protocol):
    """The Peer calls, the same for a remote worker and for this one."""

    async def StartTasks(self, request: peer_pb2.StartTasksRequest) -> peer_pb2.StartTasksReply: ...
    async def ReportTaskStatuses(self, request: peer_pb2.TaskStatusBatch) -> peer_pb2.Ack: ...
    async def MapTasks(self, request: peer_pb2.MapTasksRequest) -> peer_pb2.MapTasksReply: ...
    async def KillInstance(self, request: peer_pb2.PeerKillRequest) -> peer_pb2.Ack: ...
    async def DestroyInstance(self, request: peer_pb2.DestroyRequest) -> peer_pb2.Ack: ...
    async def CheckAlive(self, request: peer_pb2.CheckAliveRequest) -> peer_pb2.CheckAliveReply: ...


class _LocalPeer:
    """This worker's own service, called in process through the same handlers gRPC calls."""

    def __init__(self, service: PeerService) -> None:
        self._service = service

    async def StartTasks(self, request: peer_pb2.StartTasksRequest) -> peer_pb2.StartTasksReply:
        return await self._service.StartTasks(request, None)

    async def ReportTaskStatuses(self, request: peer_pb2.TaskStatusBatch) -> peer_pb2.Ack:
        return await self._service.ReportTaskStatuses(request, None)

    async def MapTasks(self, request: peer_pb2.MapTasksRequest) -> peer_pb2.MapTasksReply:
        return await self._service.MapTasks(request, None)

    async def KillInstance(self, request: peer_pb2.PeerKillRequest) -> peer_pb2.Ack:
        return await self._service.KillInstance(request, None)

    async def DestroyInstance(self, request: peer_pb2.DestroyRequest) -> peer_pb2.Ack:
        return await self._service.DestroyInstance(request, None)

    async def CheckAlive(self, request: peer_pb2.CheckAliveRequest) -> peer_pb2.CheckAliveReply:
        return await self._service.CheckAlive(request, None)


class _RemotePeer:
    """Another worker's service over gRPC, with a deadline on every call."""

    def __init__(self, channel: aio.Channel) -> None:
        self._stub = peer_pb2_grpc.PeerStub(channel)

    async def StartTasks(self, request: peer_pb2.StartTasksRequest) -> peer_pb2.StartTasksReply:
        reply: peer_pb2.StartTasksReply = await self._stub.StartTasks(request, timeout=PEER_CALL_TIMEOUT)
        return reply

    async def ReportTaskStatuses(self, request: peer_pb2.TaskStatusBatch) -> peer_pb2.Ack:
        reply: peer_pb2.Ack = await self._stub.ReportTaskStatuses(request, timeout=PEER_CALL_TIMEOUT)
        return reply

    async def MapTasks(self, request: peer_pb2.MapTasksRequest) -> peer_pb2.MapTasksReply:
        reply: peer_pb2.MapTasksReply = await self._stub.MapTasks(request, timeout=PEER_CALL_TIMEOUT)
        return reply

    async def KillInstance(self, request: peer_pb2.PeerKillRequest) -> peer_pb2.Ack:
        reply: peer_pb2.Ack = await self._stub.KillInstance(request, timeout=PEER_CALL_TIMEOUT)
        return reply

    async def DestroyInstance(self, request: peer_pb2.DestroyRequest) -> peer_pb2.Ack:
        reply: peer_pb2.Ack = await self._stub.DestroyInstance(request, timeout=PEER_CALL_TIMEOUT)
        return reply

    async def CheckAlive(self, request: peer_pb2.CheckAliveRequest) -> peer_pb2.CheckAliveReply:
        reply: peer_pb2.CheckAliveReply = await self._stub.CheckAlive(request, timeout=PEER_CALL_TIMEOUT)
        return reply


class PeerClients:
    """One channel per peer address, opened on first use; this worker's own address is served in process."""

    def __init__(self, *, local_address: Callable[[], str], app_key: str) -> None:
        self._local_address = local_address
        self._app_key = app_key
        self._local: _LocalPeer | None = None
        self._channels: dict[str, aio.Channel] = {}
        self._remotes: dict[str, _RemotePeer] = {}

    def bind_local(self, service: PeerService) -> None:
        self._local = _LocalPeer(service)

    def client(self, address: str) -> PeerApi:
        """The Peer API at ``address``; raises ValueError for an empty address."""
        if not address:
            raise ValueError("address='': a peer address is host:port")
        if self._local is not None and address == self._local_address():
            return self._local
        remote = self._remotes.get(address)
        if remote is None:
            channel = peer_channel(address, app_key=self._app_key)
            self._channels[address] = channel
            remote = self._remotes[address] = _RemotePeer(channel)
        return remote

    async def close(self) -> None:
        channels, self._channels, self._remotes = self._channels, {}, {}
        await asyncio.gather(*(channel.close() for channel in channels.values()), return_exceptions=True)


def is_unreachable(exc: BaseException) -> bool:
    """True for errors that mean the peer could not be reached or did not answer in time."""
    return isinstance(exc, aio.AioRpcError | grpc.RpcError | asyncio.TimeoutError | OSError)
