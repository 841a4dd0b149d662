"""A scheduler SIGKILLed and restarted a few seconds later: the fires it missed follow each job's misfire
policy, and none is rejected because of its own downtime.

Before the fix, a per-second job with maxConcurrency 1 got a burst of catch-up fires at the restart, and
the ones after the first ended REJECTED ("maxConcurrency 1 reached") because the first waited for the
workers to reconnect, as did instances the killed scheduler had left READY (a whole heartbeat timeout).
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections import Counter

import pytest

from sx.processors import InstanceStatus, MisfirePolicy, fixed_rate
from sx.worker import OpenApiClient
from sx.worker.openapi import InstanceDetail
from tests.e2e.conftest import DEADLINE, GROUP, NAMESPACE, Cluster, eventually
from tests.e2e.jobs import events

pytestmark = pytest.mark.slow

JOBS_PER_POLICY = 15
"""Per-second jobs of each misfire policy, so that fires of many jobs meet at the restart."""
OUTAGE = 4.0
"""Seconds between the scheduler's SIGKILL and its restart (less than the 5 s misfire grace)."""
RESTART_HEARTBEAT_TIMEOUT = 10.0
"""The restarted scheduler's heartbeat timeout: workers reconnect within it (backoff at most ~6 s)."""


def _runs_after(cluster: Cluster, job_ids: set[int], since: float, count: int) -> dict[int, int] | None:
    """Runs per job recorded with a schedule time after ``since``, once every job has ``count``."""
    per_job: Counter[int] = Counter()
    for event in events(cluster.events, "e2e.tick"):
        if event["schedule"] > since and int(event["job_id"]) in job_ids:
            per_job[int(event["job_id"])] += 1
    return dict(per_job) if all(per_job[j] >= count for j in job_ids) else None


async def test_a_restarted_scheduler_applies_the_misfire_policy_and_rejects_no_fire(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    cluster = Cluster(tmp_path_factory.mktemp("misfire"))
    cluster.events.mkdir()
    try:
        cluster.start_scheduler()
        cluster.ensure_group()
        cluster.ensure_workers(2)
        tick = cluster.definition("e2e.tick").spec
        policies: dict[int, MisfirePolicy] = {}
        async with OpenApiClient(cluster.http_url, namespace=NAMESPACE, group_id=GROUP) as client:
            for policy in (MisfirePolicy.RUN_ONCE, MisfirePolicy.SKIP):
                for n in range(JOBS_PER_POLICY):
                    spec = tick.model_copy(
                        update={
                            "name": f"misfire-{policy.value}-{n}",
                            "schedule": fixed_rate(1),
                            "max_concurrency": 1,
                            "misfire": policy,
                        }
                    )
                    policies[await client.create_job(spec)] = policy
        jobs = set(policies)

        async def every_job_ran() -> dict[int, int] | None:
            return _runs_after(cluster, jobs, 0.0, 2)

        await eventually(every_job_ran, what="two runs of every job before the crash")
        crashed = cluster.scheduler
        assert crashed is not None
        killed_at = time.time()
        crashed.signal(signal.SIGKILL)
        crashed.wait(timeout=DEADLINE)
        await asyncio.sleep(OUTAGE)  # the outage itself: fires fall due while no scheduler runs
        restarted_at = time.time()
        cluster.start_scheduler(heartbeat_timeout=RESTART_HEARTBEAT_TIMEOUT)
        for worker in cluster.workers:
            cluster.wait_registered(worker, times=2)

        # Past the restart's recovery window (one heartbeat timeout), every job still runs every second.
        settled = restarted_at + RESTART_HEARTBEAT_TIMEOUT

        async def ran_after_recovery() -> dict[int, int] | None:
            return _runs_after(cluster, jobs, settled, 2)

        await eventually(ran_after_recovery, within=DEADLINE + RESTART_HEARTBEAT_TIMEOUT, what="runs after")

        async with OpenApiClient(cluster.http_url, namespace=NAMESPACE, group_id=GROUP, retries=5) as client:
            instances: dict[int, tuple[InstanceDetail, ...]] = {}
            for job_id in jobs:
                instances[job_id] = (await client.list_instances(job_id, page_size=100)).instances
        rejected = {
            job_id: [i.instance_id for i in found if i.status is InstanceStatus.REJECTED]
            for job_id, found in instances.items()
        }
        assert {job_id: ids for job_id, ids in rejected.items() if ids} == {}, cluster.logs()

        # Fires due during the outage make at most one run per job (no catch-up burst), and nothing runs
        # twice.
        recorded = events(cluster.events, "e2e.tick")
        during = [e for e in recorded if killed_at < e["schedule"] <= restarted_at]
        missed = Counter(int(e["job_id"]) for e in during if int(e["job_id"]) in jobs)
        assert {job_id: n for job_id, n in missed.items() if n > 1} == {}
        runs = Counter(int(e["instance"]) for e in recorded)
        assert {i: n for i, n in runs.items() if n > 1} == {}

        log = cluster.scheduler.output() if cluster.scheduler else ""
        for job_id, policy in policies.items():
            said = "misfirePolicy skip" if policy is MisfirePolicy.SKIP else "misfirePolicy run_once"
            assert f"job {job_id} missed its fires since" in log and said in log, (job_id, policy)
    finally:
        cluster.stop()
