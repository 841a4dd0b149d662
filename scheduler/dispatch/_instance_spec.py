"""Turning a stored job and instance into the InstanceSpec a worker runs (times in epoch milliseconds)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sx.processors import ExecuteMode
from sx.protos.v1 import common_pb2
from sx.scheduler.store import Instance, Job

__all__ = ["build_instance_spec", "epoch_ms", "processor_of", "wants_worker_list"]


def epoch_ms(instant: datetime) -> int:
    """Epoch milliseconds of an aware datetime (the wire's time unit)."""
    return int(instant.timestamp() * 1000)


def processor_of(job: Job) -> str:
    """The registered processor name an instance of the job needs; "" for script jobs (any worker)."""
    return job.spec.class_name


def wants_worker_list(job: Job) -> bool:
    """Whether the submit carries the group's workers (the master fans out to them)."""
    return ExecuteMode(job.spec.execute_mode) is not ExecuteMode.STANDALONE


def build_instance_spec(
    job: Job, instance: Instance, *, workers: Iterable[tuple[str, str]] = ()
) -> common_pb2.InstanceSpec:
    """The InstanceSpec of one instance; ``workers`` are (worker_id, address) pairs of the group."""
    spec = job.spec
    timeout_kill = spec.monitor.timeout if spec.monitor.timeout_kill_enable else 0
    return common_pb2.InstanceSpec(
        job_id=job.id,
        instance_id=instance.id,
        job_name=spec.name,
        processor=processor_of(job),
        job_type=str(spec.job_type.value),
        content=spec.content,
        execute_mode=str(spec.execute_mode.value),
        parameters=spec.parameters,
        instance_parameters=instance.instance_parameters,
        schedule_time_ms=epoch_ms(instance.schedule_time),
        data_time_ms=epoch_ms(instance.data_time),
        attempt=instance.attempt,
        max_attempt=spec.max_attempt,
        time_type=int(instance.time_type),
        time_expression=spec.schedule.expression,
        trigger_type=int(instance.trigger_type),
        wf_instance_id=instance.wf_instance_id or 0,
        upstream_data=[
            common_pb2.UpstreamData(job_name=name, data=data) for name, data in instance.upstream_data
        ],
        map_options=common_pb2.MapOptions(
            page_size=spec.map.page_size,
            consumer_size=spec.map.consumer_size,
            queue_size=spec.map.queue_size,
            dispatcher_size=spec.map.dispatcher_size,
            task_max_attempt=spec.map.task_max_attempt,
            task_attempt_interval_s=spec.map.task_attempt_interval,
        ),
        namespace=instance.namespace,
        group_id=instance.group_id,
        workers=[common_pb2.WorkerRef(worker_id=wid, address=addr) for wid, addr in workers],
        timeout_kill_s=timeout_kill,
        capture_logs=spec.capture_logs,
    )
