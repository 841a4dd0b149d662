"""The scheduler's task-store RPCs ask for a proof of the group's app key, not just a worker id, made for
that very request and accepted once."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TypeVar

import grpc
import pytest
from grpc import aio

from sx.protos import PROOF_WINDOW, TaskRequest, sign_task_request
from sx.protos.v1 import scheduler_pb2, scheduler_pb2_grpc
from sx.scheduler import SchedulerServer, SchedulerSettings
from sx.scheduler.store import Group, Namespace

NS, GROUP, APP_KEY = "ns-auth", "g-auth", "the-key"


@pytest.fixture
async def stub(tmp_path: Path) -> AsyncIterator[scheduler_pb2_grpc.SchedulerStub]:
    settings = SchedulerSettings(data_dir=tmp_path / "scheduler", http_port=0, grpc_port=0)
    async with SchedulerServer(settings) as server:
        await server.store.create_namespace(Namespace(id=NS, name=NS))
        await server.store.create_group(Group(namespace=NS, group_id=GROUP, app_key=APP_KEY))
        async with aio.insecure_channel(server.grpc_address) as channel:
            yield scheduler_pb2_grpc.SchedulerStub(channel)


def caller(*, group_id: str = GROUP) -> scheduler_pb2.TaskCaller:
    return scheduler_pb2.TaskCaller(namespace=NS, group_id=group_id, worker_id="w1")


R = TypeVar("R", bound=TaskRequest)


def signed(request: R, rpc: str, *, key: str = APP_KEY, now: float | None = None) -> R:
    """``request`` signed as the worker's task store signs it."""
    sign_task_request(key, rpc, request, now=now)
    return request


async def refused(call: object) -> aio.AioRpcError:
    with pytest.raises(aio.AioRpcError) as error:
        await call  # type: ignore[misc]
    return error.value


def load(instance_id: int = 77) -> scheduler_pb2.LoadTasksRequest:
    return scheduler_pb2.LoadTasksRequest(caller=caller(), instance_id=instance_id)


def create(task_name: str = "x") -> scheduler_pb2.CreateTasksRequest:
    return scheduler_pb2.CreateTasksRequest(
        caller=caller(), instance_id=77, tasks=[scheduler_pb2.StoredTask(task_id=1, task_name=task_name)]
    )


async def test_task_calls_with_a_wrong_or_missing_proof_are_refused(
    stub: scheduler_pb2_grpc.SchedulerStub,
) -> None:
    malformed = load()
    malformed.caller.proof = APP_KEY
    for request, why in [
        (load(), "no proof"),
        (malformed, "malformed"),
        (signed(load(), "LoadTasks", key="not-the-key"), "does not match"),
        (signed(load(), "QueryTasks"), "does not match"),  # a proof made for another method
        (signed(load(), "LoadTasks", now=time.time() - PROOF_WINDOW - 5), "window"),  # expired
    ]:
        error = await refused(stub.LoadTasks(request))
        assert error.code() is grpc.StatusCode.UNAUTHENTICATED, error.details()
        assert "caller.proof" in (error.details() or "") and why in (error.details() or "")
    for call in (
        stub.QueryTasks(scheduler_pb2.QueryTasksRequest(caller=caller(), instance_id=77)),
        stub.CreateTasks(create()),
        stub.UpdateTasks(scheduler_pb2.UpdateTasksRequest(caller=caller(), instance_id=77)),
    ):
        error = await refused(call)
        assert error.code() is grpc.StatusCode.UNAUTHENTICATED and "no proof" in (error.details() or "")
    # An unknown group has no key to prove.
    unknown = signed(
        scheduler_pb2.LoadTasksRequest(caller=caller(group_id="nope"), instance_id=77), "LoadTasks"
    )
    error = await refused(stub.LoadTasks(unknown))
    assert error.code() is grpc.StatusCode.UNAUTHENTICATED and "no such group" in (error.details() or "")


async def test_a_valid_proof_still_needs_the_instance(stub: scheduler_pb2_grpc.SchedulerStub) -> None:
    error = await refused(stub.LoadTasks(signed(load(), "LoadTasks")))
    assert error.code() is grpc.StatusCode.PERMISSION_DENIED
    assert "does not hold this instance" in (error.details() or "")


async def test_a_captured_task_call_cannot_be_sent_again(stub: scheduler_pb2_grpc.SchedulerStub) -> None:
    captured = signed(create(), "CreateTasks")
    # The genuine call: its proof is accepted (then the caller is told it does not hold the instance).
    first = await refused(stub.CreateTasks(captured))
    assert first.code() is grpc.StatusCode.PERMISSION_DENIED
    again = await refused(stub.CreateTasks(captured))
    assert again.code() is grpc.StatusCode.UNAUTHENTICATED
    assert "was used before" in (again.details() or "")


async def test_a_captured_proof_does_not_carry_another_request(
    stub: scheduler_pb2_grpc.SchedulerStub,
) -> None:
    captured = signed(create(), "CreateTasks")
    for change in (
        lambda r: setattr(r.tasks[0], "task_name", "rm -rf"),
        lambda r: r.tasks.add(task_id=2, task_name="extra"),
        lambda r: setattr(r, "instance_id", 78),
        lambda r: setattr(r.caller, "worker_id", "w2"),
    ):
        altered = scheduler_pb2.CreateTasksRequest()
        altered.CopyFrom(captured)
        change(altered)
        error = await refused(stub.CreateTasks(altered))
        assert error.code() is grpc.StatusCode.UNAUTHENTICATED
        assert "does not match" in (error.details() or "")
    # None of the altered calls used the proof up: the genuine call still goes through.
    error = await refused(stub.CreateTasks(captured))
    assert error.code() is grpc.StatusCode.PERMISSION_DENIED
