"""The `Dispatcher` itself: killing instances, its settings, and what it keeps per instance."""

from __future__ import annotations

from pathlib import Path

import pytest

from sx.processors import ExecuteMode, InstanceStatus
from sx.scheduler._clock import ManualClock
from sx.scheduler.dispatch import Dispatcher
from sx.scheduler.store import Instance
from sx.scheduler.store.sql import SqlStore, sqlite_url
from tests.scheduler.dispatch.test_harness import GROUP, HEARTBEAT_TIMEOUT, NS, Setup, eventually

# -- kill -----------------------------------------------------------------------------------------


async def test_stop_instance_sends_kill_to_its_worker(setup: Setup) -> None:
    dispatcher = await setup.start_dispatcher()
    worker = await setup.worker("w1")
    instance = await setup.dispatch()
    await setup.wait_status(instance.id, InstanceStatus.RUNNING)
    assert await dispatcher.stop_instance(instance, "stopped by test") is True
    await eventually(lambda: len(worker.kills) == 1)
    kill = worker.kills[0]
    assert (kill.instance_id, kill.job_id, kill.reason) == (instance.id, setup.job.id, "stopped by test")
    await worker.report(instance.id, InstanceStatus.FAILED, "killed: stopped by test")
    failed = await setup.wait_status(instance.id, InstanceStatus.FAILED)
    assert failed.result == "killed: stopped by test"
    assert await dispatcher.stop_instance(failed, "again") is False


async def test_stop_waiting_instance_fails_it_at_once(setup: Setup) -> None:
    dispatcher = await setup.start_dispatcher()
    instance = await setup.dispatch(delay=60)
    assert await dispatcher.stop_instance(instance, "not needed") is True
    failed = await setup.store.get_instance(instance.id)
    assert failed is not None
    assert (failed.status, failed.result) == (InstanceStatus.FAILED, "killed: not needed")
    assert [(i.id, system) for i, system in setup.finished] == [(instance.id, False)]
    assert await dispatcher.stop_instance(failed, "again") is False


def test_bad_timings_are_refused(tmp_path: Path) -> None:
    async def nothing(instance: Instance, system_failure: bool) -> None:
        return None

    store = SqlStore(sqlite_url(tmp_path))
    with pytest.raises(ValueError, match="heartbeat_timeout=1"):
        Dispatcher(store, clock=ManualClock(), on_finished=nothing, heartbeat_interval=3, heartbeat_timeout=1)
    with pytest.raises(ValueError, match="no_worker_grace=-1"):
        Dispatcher(store, clock=ManualClock(), on_finished=nothing, no_worker_grace=-1)


# -- bookkeeping ----------------------------------------------------------------------------------


def _held_ids(dispatcher: Dispatcher) -> set[int]:
    """Every instance id the dispatcher keeps a per-instance record of."""
    state = dispatcher._state
    held = set(state.waiting) | set(state.owner) | set(state.refused)
    held |= set(state.resumes) | set(state.task_files) | set(state.resume_until)
    for orphans in state.orphans.values():
        held |= set(orphans.assigned)
    for session in state.registry.sessions():
        held |= set(session.assigned)
    return held


async def test_dispatcher_keeps_nothing_of_finished_instances(setup: Setup) -> None:
    dispatcher = await setup.start_dispatcher()
    batch = await setup.add_job("batch-job", class_name="demo", execute_mode=ExecuteMode.BATCH)
    master = await setup.worker("w-master")
    resumed = await setup.dispatch(job=batch)
    await setup.wait_status(resumed.id, InstanceStatus.RUNNING)
    await master.drop()
    await eventually(lambda: dispatcher.live_workers(NS, GROUP) == [])
    await setup.clock.advance(HEARTBEAT_TIMEOUT + 1)
    await setup.wait_status(resumed.id, InstanceStatus.WAITING)  # submitted again as a resume
    assert dispatcher._state.resumes == {resumed.id: 1}
    assert await dispatcher.stop_instance(resumed, "not needed any more") is True
    await setup.wait_status(resumed.id, InstanceStatus.FAILED)

    refuser = await setup.worker("w-refuse", accept=False, refuse_message="busy")
    refused = await setup.dispatch()
    await setup.wait_status(refused.id, InstanceStatus.FAILED)
    await refuser.drop()
    await eventually(lambda: dispatcher.live_workers(NS, GROUP) == [])

    worker = await setup.worker("w1")
    succeeded = await setup.dispatch()
    await setup.wait_status(succeeded.id, InstanceStatus.RUNNING)
    await worker.report(succeeded.id, InstanceStatus.SUCCESS, "ok")
    await setup.wait_status(succeeded.id, InstanceStatus.SUCCESS)
    killed = await setup.dispatch(delay=3600)
    assert await dispatcher.stop_instance(killed, "not needed") is True
    await setup.wait_status(killed.id, InstanceStatus.FAILED)

    finished = {resumed.id, refused.id, succeeded.id, killed.id}
    assert _held_ids(dispatcher) & finished == set()
