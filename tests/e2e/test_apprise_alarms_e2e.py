"""Alarms through apprise end to end: a job's alarmUrl and contacts' ding travel through the OpenAPI
into the store, and a real scheduler sends a failed instance's alarm to local HTTP receivers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sx.processors import Contact, JobContext, Processor, Registry, processor
from sx.worker.testing import LocalScheduler
from tests.e2e.conftest import eventually
from tests.scheduler.jobs.test_alarms import Receiver

registry = Registry()


@pytest.fixture
async def receivers() -> AsyncIterator[tuple[Receiver, Receiver, Receiver]]:
    made = (Receiver(), Receiver(), Receiver())
    for r in made:
        await r.start()
    yield made
    for r in made:
        await r.close()


def json_url(receiver: Receiver) -> str:
    return receiver.url.replace("http://", "json://", 1)


async def test_failures_reach_the_scheduler_url_the_job_url_and_ding_robots(
    tmp_path: Path, receivers: tuple[Receiver, Receiver, Receiver]
) -> None:
    scheduler_hook, job_hook, robot = receivers
    robot_url = robot.url.replace("/hook", "/robot/send") + "?access_token=tok"

    @processor(name="alarm.default", fail_enable=True, send_channel="apprise", registry=registry)
    class ToTheDefault(Processor):
        def process(self, ctx: JobContext) -> None:
            raise RuntimeError("default boom")

    @processor(
        name="alarm.own",
        fail_enable=True,
        send_channel="apprise",
        alarm_url=json_url(job_hook),
        contacts=[Contact(user_name="Ann", ding=robot_url)],
        registry=registry,
    )
    class ToItsOwn(Processor):
        def process(self, ctx: JobContext) -> None:
            raise RuntimeError("own boom")

    @processor(
        name="alarm.ding",
        fail_enable=True,
        send_channel="ding",
        contacts=[Contact(ding=robot_url)],
        registry=registry,
    )
    class ToDing(Processor):
        def process(self, ctx: JobContext) -> None:
            raise RuntimeError("ding boom")

    options = {"alarm_apprise_url": json_url(scheduler_hook)}
    async with LocalScheduler(tmp_path, registry=registry, scheduler_options=options) as sched:
        # The job's alarm settings survive the OpenAPI round trip.
        own = await sched.client.get_job(await sched.job_id(ToItsOwn))
        assert own.spec.monitor.alarm_url == json_url(job_hook)
        assert own.spec.monitor.contacts[0].ding == robot_url

        for target in (ToTheDefault, ToItsOwn, ToDing):
            assert not (await sched.run_job(target)).ok

        async def all_sent() -> bool:
            return len(scheduler_hook.bodies) == 1 and len(job_hook.bodies) == 1 and len(robot.bodies) == 2

        await eventually(all_sent, what="the three alarms to reach their receivers")
        assert "default boom" in scheduler_hook.bodies[0]["message"]
        assert "own boom" in job_hook.bodies[0]["message"]
        assert sorted(b["message"].split(":")[-1].split("\n")[0].strip() for b in robot.bodies) == [
            "ding boom",
            "own boom",
        ]
        assert all(path.startswith("/robot/send?") and "access_token=tok" in path for path in robot.paths)

        async def recorded() -> bool:
            page = await sched.client.list_alarms()
            return len(page.alarms) == 3 and all(a.delivered for a in page.alarms)

        await eventually(recorded, what="three delivered alarms in the history")
