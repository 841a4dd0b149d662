"""A scheduler SIGKILLed at each step of a dispatch pass runs no instance twice and strands none.

The scheduler kills itself at a crash point (``SX_CRASH_AT``, see ``sx.scheduler._crash_points``) while
a burst of ExecuteJob calls is being dispatched to two real workers; it is then started again on the same
data and ports. Every instance it had created must end SUCCESS after exactly one run of the processor.
Before the fix, a pass sent its instances before recording them READY, so a crash between the two left
instances that workers ran marked WAITING, and the restart sent them again.
"""

from __future__ import annotations

import asyncio
import signal
from collections import Counter

import pytest

from sx.processors import InstanceStatus
from sx.worker import OpenApiClient
from tests.e2e.conftest import DEADLINE, GROUP, NAMESPACE, Cluster, eventually, wait_for
from tests.e2e.jobs import events

pytestmark = pytest.mark.slow

BURST = 16
"""ExecuteJob calls sent at once, so that dispatch passes submit several instances each."""
RESTART_HEARTBEAT_TIMEOUT = 20.0
"""Seconds the restarted scheduler keeps a silent worker's instances for it (its reconnect backoff is at
most 5 s)."""


@pytest.mark.parametrize(
    "crash_at",
    [
        "dispatch.assigned",  # workers chosen, nothing written or sent
        "dispatch.recorded",  # READY committed, nothing sent
        "dispatch.sent",  # the first submission sent, the rest of the pass not
        "dispatch.sent:6",  # cut in the middle of the burst
        "dispatch.report",  # workers received and ran instances whose reports the store never saw
    ],
)
async def test_a_scheduler_killed_mid_dispatch_runs_nothing_twice(
    crash_at: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    cluster = Cluster(tmp_path_factory.mktemp("crash"))
    cluster.events.mkdir()
    try:
        cluster.start_scheduler(env={"SX_CRASH_AT": crash_at})
        cluster.ensure_group()
        cluster.ensure_workers(2)
        async with OpenApiClient(cluster.http_url, namespace=NAMESPACE, group_id=GROUP) as client:
            job_id = await cluster.job_id(client, "e2e.tick")
            # Calls cut short by the crash may or may not have created their instance: the store says.
            await asyncio.gather(*(client.execute_job(job_id) for _ in range(BURST)), return_exceptions=True)
        crashed = cluster.scheduler
        assert crashed is not None
        wait_for(
            lambda: not crashed.alive() or None, within=DEADLINE, what=f"the scheduler to crash at {crash_at}"
        )
        assert crashed.popen.returncode == -signal.SIGKILL, crashed.tail()
        assert f"crash point {crash_at.split(':')[0]} reached" in crashed.output()

        # The hardest order for the restart: one worker (which may hold instances sent before the crash,
        # run or running) is frozen while the other registers and asks for work, and only comes back
        # after that, well within the restarted scheduler's heartbeat timeout.
        held, other = cluster.workers
        held.signal(signal.SIGSTOP)
        try:
            cluster.start_scheduler(heartbeat_timeout=RESTART_HEARTBEAT_TIMEOUT)
            cluster.wait_registered(other, times=2)
        finally:
            held.signal(signal.SIGCONT)
        cluster.wait_registered(held, times=2)
        async with OpenApiClient(cluster.http_url, namespace=NAMESPACE, group_id=GROUP, retries=5) as client:
            created = (await client.list_instances(job_id, page_size=100)).instances
            assert created, "the burst created no instance before the crash"

            async def all_final() -> list[InstanceStatus] | None:
                page = await client.list_instances(job_id, page_size=100)
                statuses = [i.status for i in page.instances]
                return statuses if all(s.finished for s in statuses) else None

            statuses = await eventually(all_final, what="every instance of the burst to finish")
        assert statuses == [InstanceStatus.SUCCESS] * len(statuses), cluster.logs()

        def one_run_each() -> Counter[int] | None:
            runs = Counter(int(e["instance"]) for e in events(cluster.events, "e2e.tick"))
            return runs if len(runs) == len(statuses) else None

        runs = wait_for(one_run_each, within=DEADLINE, what="a recorded run of every instance")
        assert {instance for instance, count in runs.items() if count > 1} == set(), cluster.logs()
    finally:
        cluster.stop()
