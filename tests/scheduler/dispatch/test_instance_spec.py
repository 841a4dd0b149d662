"""The InstanceSpec a worker gets (`_instance_spec`)."""

from __future__ import annotations

from sx.processors import MapOptions, MonitorOptions, TimeType, TriggerType, cron
from sx.scheduler.dispatch._instance_spec import build_instance_spec
from tests.scheduler.dispatch.test_harness import Setup


async def test_instance_spec_carries_job_and_instance_fields(setup: Setup) -> None:
    job = await setup.add_job(
        "full",
        class_name="demo",
        max_attempt=3,
        schedule=cron("0 0 * * * ?"),
        map=MapOptions(page_size=7, task_max_attempt=2, task_attempt_interval=9),
        monitor=MonitorOptions(timeout=120, timeout_kill_enable=True),
    )
    instance = await setup.new_instance(job=job)
    spec = build_instance_spec(job, instance, workers=[("w1", "h:1")])
    assert (spec.max_attempt, spec.time_expression, spec.timeout_kill_s) == (3, "0 0 * * * ?", 120)
    assert (spec.map_options.page_size, spec.map_options.task_max_attempt) == (7, 2)
    assert spec.map_options.task_attempt_interval_s == 9
    assert (spec.trigger_type, spec.time_type) == (int(TriggerType.API), int(TimeType.API))
    assert spec.data_time_ms == int(instance.data_time.timestamp() * 1000)
    assert [(w.worker_id, w.address) for w in spec.workers] == [("w1", "h:1")]
    assert build_instance_spec(setup.job, instance).timeout_kill_s == 0
