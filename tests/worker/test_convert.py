"""Conversions between InstanceSpec / reports on the wire and JobContext."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import UTC, datetime

import pytest

from sx.processors import ExecuteMode, InstanceStatus, JobContext, JobType
from sx.processors.engine import JSON_CODEC
from sx.protos.v1 import common_pb2, peer_pb2
from sx.worker._convert import (
    ContextFactory,
    TaskInfo,
    context_for,
    datetime_to_ms,
    execute_mode_of,
    instance_report,
    ms_to_datetime,
)


def _spec(**fields: object) -> common_pb2.InstanceSpec:
    base: dict[str, object] = {
        "job_id": 7,
        "instance_id": 70,
        "job_name": "nightly",
        "processor": "p",
        "job_type": "python",
        "execute_mode": "standalone",
        "parameters": "job-params",
        "instance_parameters": "inst-params",
        "schedule_time_ms": 1_700_000_000_123,
        "data_time_ms": 1_699_999_000_000,
        "attempt": 1,
        "max_attempt": 3,
        "wf_instance_id": 9,
        "namespace": "ns",
        "group_id": "g",
    }
    base.update(fields)
    return common_pb2.InstanceSpec(**base)  # type: ignore[arg-type]


def test_ms_round_trip() -> None:
    moment = datetime(2024, 5, 1, 12, 30, 15, 250000, tzinfo=UTC)
    assert ms_to_datetime(datetime_to_ms(moment)) == moment


def test_context_from_spec() -> None:
    spec = _spec(upstream_data=[common_pb2.UpstreamData(job_name="up", data="42")])
    ctx = context_for(spec, worker_addr="127.0.0.1:1")
    assert (ctx.job_id, ctx.instance_id, ctx.job_name, ctx.wf_instance_id) == (7, 70, "nightly", 9)
    assert ctx.job_parameters == "job-params"
    assert ctx.getInstanceParameters() == "inst-params"
    assert ctx.schedule_time == ms_to_datetime(1_700_000_000_123)
    assert ctx.data_time == ms_to_datetime(1_699_999_000_000)
    assert (ctx.attempt, ctx.max_attempt) == (1, 3)
    assert ctx.execute_mode is ExecuteMode.STANDALONE
    assert ctx.job_type is JobType.PYTHON
    assert (ctx.namespace, ctx.group_id, ctx.worker_addr) == ("ns", "g", "127.0.0.1:1")
    assert [(u.job_name, u.data) for u in ctx.upstream_data] == [("up", "42")]
    assert ctx.is_root_task


def test_context_for_a_broadcast_task() -> None:
    task = TaskInfo.from_proto(
        peer_pb2.TaskRequest(task_id=1, task_name="b-1", sharding_id=1, sharding_num=2)
    )
    ctx = context_for(_spec(execute_mode="broadcatst"), worker_addr="w", task=task)
    assert ctx.execute_mode is ExecuteMode.BROADCAST
    assert (ctx.task_id, ctx.task_name, ctx.sharding_id, ctx.sharding_num) == (1, "b-1", 1, 2)


def test_empty_fields_get_defaults() -> None:
    spec = common_pb2.InstanceSpec(instance_id=1)
    ctx = context_for(spec, worker_addr="w")
    assert ctx.execute_mode is ExecuteMode.STANDALONE
    assert ctx.schedule_time.tzinfo is not None


def test_bad_execute_mode_names_the_value() -> None:
    with pytest.raises(ValueError, match="execute_mode='sideways'"):
        execute_mode_of(_spec(execute_mode="sideways"))
    with pytest.raises(ValueError, match="job_type='cobol'"):
        context_for(_spec(job_type="cobol"), worker_addr="w")


def test_instance_report() -> None:
    report = instance_report(_spec(), InstanceStatus.SUCCESS, result="ok", start_time_ms=5, end_time_ms=6)
    assert (report.instance_id, report.job_id, report.status, report.result) == (70, 7, 4, "ok")
    assert (report.start_time_ms, report.end_time_ms, report.delivery_id) == (5, 6, "")


async def test_a_context_factory_makes_what_context_for_makes_with_objects_of_its_own() -> None:
    spec = common_pb2.InstanceSpec(
        instance_id=7,
        job_id=3,
        job_name="grid",
        execute_mode="grid",
        parameters="p",
        schedule_time_ms=1_900_000_000_000,
    )
    loop = asyncio.get_running_loop()
    factory = ContextFactory(spec, worker_addr="127.0.0.1:1", codec=JSON_CODEC, loop=loop)
    info = TaskInfo(task_id=5, task_name="part", payload=b'{"n": 1}', task_attempt=2, sharding_num=3)
    made, other = factory.make(info, mapper=None), factory.make(info, mapper=None)  # type: ignore[arg-type]
    expected = context_for(spec, worker_addr="127.0.0.1:1", task=info, codec=JSON_CODEC, loop=loop)
    assert vars(made).keys() == vars(expected).keys()
    for field in dataclasses.fields(JobContext):
        if field.name != "_lock":
            assert getattr(made, field.name) == getattr(expected, field.name), field.name
    # Every mutable object is the context's own: one task's results or cancellation are not another's.
    for name, value in vars(made).items():
        if isinstance(value, (list, dict, set)) or name == "_lock":
            assert value is not getattr(other, name), name
    made.cancel()
    assert made.is_cancelled and not other.is_cancelled
