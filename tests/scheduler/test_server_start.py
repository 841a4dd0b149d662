"""A whole SchedulerServer: a failed start releases what it started; one SQLite file serves one
scheduler; a restart picks up workflows."""

from __future__ import annotations

import asyncio
import socket
from datetime import timedelta
from pathlib import Path

import pytest

from sx.processors import InstanceStatus, JobSpec
from sx.scheduler import SchedulerServer, SchedulerStartError
from sx.scheduler._settings import SchedulerSettings
from sx.scheduler.store import InstanceChange, InUseError
from sx.scheduler.store.sql import SqlStore


def _sx_tasks() -> list[asyncio.Task[object]]:
    return [t for t in asyncio.all_tasks() if t.get_name().startswith("sx-") and not t.done()]


async def test_failed_start_stops_the_parts_already_started(tmp_path: Path) -> None:
    taken = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    try:
        settings = SchedulerSettings(data_dir=tmp_path, http_port=taken.getsockname()[1], grpc_port=0)
        server = SchedulerServer(settings)
        with pytest.raises(SchedulerStartError, match=r"cannot listen for the OpenAPI on 127\.0\.0\.1:"):
            await server.start()
    finally:
        taken.close()
    grpc_port = int(server.grpc_address.rsplit(":", 1)[1])
    assert grpc_port > 0  # the gRPC server had started before the HTTP port was found taken
    probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        probe.bind(("127.0.0.1", grpc_port))  # free again: the gRPC server was stopped
    finally:
        probe.close()
    assert _sx_tasks() == []
    assert isinstance(server.store, SqlStore) and server.store._engine is None  # closed
    await server.stop()  # stopping again is harmless


async def test_a_second_scheduler_on_the_same_sqlite_file_is_refused(tmp_path: Path) -> None:
    settings = SchedulerSettings(data_dir=tmp_path, http_port=0, grpc_port=0)
    async with SchedulerServer(settings) as first:
        second = SchedulerServer(settings)
        with pytest.raises(
            SchedulerStartError, match=r"scheduler\.db is in use by another scheduler"
        ) as refused:
            await second.start()
        assert isinstance(refused.value.__cause__, InUseError)
        assert second.grpc_address == ""  # refused before opening a port
        assert await first.store.has_access_keys() is False  # the first one goes on
    async with SchedulerServer(settings):  # stopped: the file is free again
        pass


async def test_restart_advances_a_workflow_whose_node_end_was_not_recorded(tmp_path: Path) -> None:
    settings = SchedulerSettings(data_dir=tmp_path, http_port=0, grpc_port=0)
    async with SchedulerServer(settings) as server:
        service = server.service
        await server.admin.create_namespace("ns")
        await server.admin.create_group("ns", "g")
        first = await service.create_job("ns", "g", JobSpec(name="first", class_name="demo"))
        second = await service.create_job("ns", "g", JobSpec(name="second", class_name="demo"))
        workflow = await server.workflows.create_workflow(
            "ns", "g", {"name": "chain", "nodes": [first.id, second.id], "edges": [[first.id, second.id]]}
        )
        wf_instance = await server.workflows.execute("ns", "g", workflow.id)
        [node] = await server.store.list_workflow_nodes(wf_instance.id)
        # The node's instance ended in the store, and the scheduler stopped before its node record
        # (and so the workflow) heard of it.
        ended = server.clock.now() - timedelta(hours=1)
        await server.store.update_instance(
            node.instance_id,
            InstanceChange(status=InstanceStatus.SUCCESS, end_time=ended, result="first done"),
        )
    async with SchedulerServer(settings) as restarted:
        nodes = {n.job_id: n for n in await restarted.store.list_workflow_nodes(wf_instance.id)}
        assert set(nodes) == {first.id, second.id}
        assert (nodes[first.id].status, nodes[first.id].result) == (InstanceStatus.SUCCESS, "first done")
        started = await restarted.store.get_instance(nodes[second.id].instance_id)
        assert started is not None and started.upstream_data == (("first", "first done"),)
        # Recovery is idempotent: another pass starts nothing twice.
        await restarted.workflow_engine.recover()
        assert len(await restarted.store.list_workflow_nodes(wf_instance.id)) == 2
        page = await restarted.store.list_instances(second.id, limit=10)
        assert page.total == 1
