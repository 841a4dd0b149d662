"""The scheduler's task-store RPCs ask for a proof of the group's app key, not just a worker id."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from grpc import aio

from sx.protos import make_proof, task_caller_subject
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


def caller(proof: str, *, group_id: str = GROUP) -> scheduler_pb2.TaskCaller:
    return scheduler_pb2.TaskCaller(namespace=NS, group_id=group_id, worker_id="w1", proof=proof)


async def refused(call: object) -> aio.AioRpcError:
    with pytest.raises(aio.AioRpcError) as error:
        await call  # type: ignore[misc]
    return error.value


async def test_task_calls_with_a_wrong_or_missing_proof_are_refused(
    stub: scheduler_pb2_grpc.SchedulerStub,
) -> None:
    instance_id = 77
    subject = task_caller_subject(NS, GROUP, "w1", instance_id)
    wrong_key = make_proof("not-the-key", subject)
    other_instance = make_proof(APP_KEY, task_caller_subject(NS, GROUP, "w1", instance_id + 1))
    for proof, why in [
        ("", "no proof"),
        (APP_KEY, "malformed"),
        (wrong_key, "does not match"),
        (other_instance, "does not match"),
    ]:
        for call in (
            stub.LoadTasks(scheduler_pb2.LoadTasksRequest(caller=caller(proof), instance_id=instance_id)),
            stub.QueryTasks(scheduler_pb2.QueryTasksRequest(caller=caller(proof), instance_id=instance_id)),
            stub.CreateTasks(
                scheduler_pb2.CreateTasksRequest(
                    caller=caller(proof),
                    instance_id=instance_id,
                    tasks=[scheduler_pb2.StoredTask(task_id=1, task_name="x")],
                )
            ),
            stub.UpdateTasks(scheduler_pb2.UpdateTasksRequest(caller=caller(proof), instance_id=instance_id)),
        ):
            error = await refused(call)
            assert error.code() is grpc.StatusCode.UNAUTHENTICATED, error.details()
            assert "caller.proof" in (error.details() or "") and why in (error.details() or "")
    # An unknown group has no key to prove.
    error = await refused(
        stub.LoadTasks(
            scheduler_pb2.LoadTasksRequest(caller=caller(wrong_key, group_id="nope"), instance_id=instance_id)
        )
    )
    assert error.code() is grpc.StatusCode.UNAUTHENTICATED


async def test_a_valid_proof_still_needs_the_instance(stub: scheduler_pb2_grpc.SchedulerStub) -> None:
    proof = make_proof(APP_KEY, task_caller_subject(NS, GROUP, "w1", 77))
    error = await refused(
        stub.LoadTasks(scheduler_pb2.LoadTasksRequest(caller=caller(proof), instance_id=77))
    )
    assert error.code() is grpc.StatusCode.PERMISSION_DENIED
    assert "does not hold this instance" in (error.details() or "")
