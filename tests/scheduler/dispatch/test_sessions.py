"""Worker streams (`_sessions`): registration, a lost or silent worker, reconnecting, restart recovery."""

from __future__ import annotations

import grpc
import pytest

from sx.processors import ExecuteMode, InstanceStatus
from sx.scheduler.store import Instance, InstanceChange
from tests.scheduler.dispatch.test_harness import (
    APP_KEY,
    GROUP,
    HEARTBEAT_TIMEOUT,
    NS,
    ProtocolWorker,
    Setup,
    eventually,
)

# -- registration ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("app_key", "group_id", "expected"),
    [
        ("wrong", GROUP, "app key for group 'g' in namespace 'ns' is wrong"),
        ("", GROUP, "app key for group 'g' in namespace 'ns' is missing"),
        (APP_KEY, "nope", "group 'nope' in namespace 'ns' does not exist"),
    ],
)
async def test_registration_refused_names_the_group(
    setup: Setup, app_key: str, group_id: str, expected: str
) -> None:
    await setup.start_dispatcher()
    worker = ProtocolWorker(setup.target, worker_id="w1", app_key=app_key, group_id=group_id)
    setup.workers.append(worker)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await worker.connect()
    assert caught.value.code() is grpc.StatusCode.UNAUTHENTICATED
    assert caught.value.details() == expected
    assert setup.dispatcher is not None
    assert setup.dispatcher.live_workers(NS, GROUP) == []


async def test_registered_worker_is_live_with_scheduler_timings(setup: Setup) -> None:
    dispatcher = await setup.start_dispatcher()
    worker = await setup.worker("w1", capacity=4)
    assert worker.registered is not None
    assert worker.registered.heartbeat_interval_ms == 1000
    assert worker.registered.heartbeat_timeout_ms == 10000
    assert worker.registered.scheduler_id == "test-scheduler"
    [info] = dispatcher.live_workers(NS, GROUP)
    assert (info.worker_id, info.address, info.capacity) == ("w1", worker.address, 4)
    assert info.processors == frozenset({"demo"})


# -- worker loss ----------------------------------------------------------------------------------


async def test_dropped_stream_fails_running_instance_as_lost(setup: Setup) -> None:
    dispatcher = await setup.start_dispatcher()
    worker = await setup.worker("w1")
    instance = await setup.dispatch()
    await setup.wait_status(instance.id, InstanceStatus.RUNNING)
    await worker.drop()
    await eventually(lambda: dispatcher.live_workers(NS, GROUP) == [])
    # The worker gets one heartbeat timeout to come back for it.
    assert await setup.status_of(instance.id) is InstanceStatus.RUNNING
    await setup.clock.advance(HEARTBEAT_TIMEOUT + 1)
    failed = await setup.wait_status(instance.id, InstanceStatus.FAILED)
    assert failed.result == f"worker w1 ({worker.address}) lost"
    await setup.wait_finished([(instance.id, True)])


async def test_reconnecting_worker_keeps_its_instance_and_resends_its_report(setup: Setup) -> None:
    dispatcher = await setup.start_dispatcher()
    worker = await setup.worker("w1")
    instance = await setup.dispatch()
    await setup.wait_status(instance.id, InstanceStatus.RUNNING)
    await worker.drop()
    await eventually(lambda: dispatcher.live_workers(NS, GROUP) == [])
    await worker.connect(running_instance_ids=(instance.id,))
    await setup.advance_keeping(worker, HEARTBEAT_TIMEOUT + 1)
    assert await setup.status_of(instance.id) is InstanceStatus.RUNNING
    delivery = await worker.report(instance.id, InstanceStatus.SUCCESS, "finished while away")
    await eventually(lambda: delivery in worker.acks)
    done = await setup.wait_status(instance.id, InstanceStatus.SUCCESS)
    assert done.result == "finished while away"
    assert [(i.id, system) for i, system in setup.finished] == [(instance.id, False)]


async def test_instance_never_accepted_by_a_lost_worker_is_submitted_again(setup: Setup) -> None:
    dispatcher = await setup.start_dispatcher()
    mute = await setup.worker("w-mute", reply=False)
    instance = await setup.dispatch()
    await eventually(lambda: len(mute.submits) == 1)
    submitted = await setup.wait_status(instance.id, InstanceStatus.READY)
    assert submitted.worker_id == "w-mute"
    await mute.drop()
    await eventually(lambda: dispatcher.live_workers(NS, GROUP) == [])
    await setup.clock.advance(HEARTBEAT_TIMEOUT + 1)
    await setup.wait_status(instance.id, InstanceStatus.WAITING)
    other = await setup.worker("w2")
    await eventually(lambda: [s.instance_id for s in other.submits] == [instance.id])
    await setup.wait_status(instance.id, InstanceStatus.RUNNING)
    assert setup.finished == []


async def test_silent_worker_is_dropped_and_its_instance_lost(setup: Setup) -> None:
    dispatcher = await setup.start_dispatcher()
    worker = await setup.worker("w1")
    instance = await setup.dispatch()
    await setup.wait_status(instance.id, InstanceStatus.RUNNING)
    await setup.clock.advance(HEARTBEAT_TIMEOUT + 1)
    failed = await setup.wait_status(instance.id, InstanceStatus.FAILED)
    assert failed.result == f"worker w1 ({worker.address}) lost"
    assert dispatcher.live_workers(NS, GROUP) == []
    await eventually(lambda: worker.ended is not None)
    assert worker.ended is not None
    assert worker.ended.code() is grpc.StatusCode.UNAVAILABLE
    await setup.wait_finished([(instance.id, True)])


# -- restart recovery -----------------------------------------------------------------------------


async def test_restarted_dispatcher_dispatches_waiting_and_reclaims_running(setup: Setup) -> None:
    await setup.start_dispatcher()
    await setup.stop_dispatcher()
    # What a stopped scheduler left in the store.
    waiting = await setup.new_instance()
    running = await setup.new_instance(status=InstanceStatus.RUNNING)
    orphan = await setup.new_instance(status=InstanceStatus.RUNNING)
    await setup.store.update_instance(running.id, InstanceChange(worker_id="w1", worker_addr="old:1"))
    await setup.store.update_instance(orphan.id, InstanceChange(worker_id="w-gone", worker_addr="gone:1"))

    await setup.start_dispatcher()
    worker = ProtocolWorker(setup.target, worker_id="w1")
    setup.workers.append(worker)
    await worker.connect(running_instance_ids=(running.id,))
    await eventually(lambda: [s.instance_id for s in worker.submits] == [waiting.id])
    await setup.wait_status(waiting.id, InstanceStatus.RUNNING)

    await setup.advance_keeping(worker, HEARTBEAT_TIMEOUT + 1)
    lost = await setup.wait_status(orphan.id, InstanceStatus.FAILED)
    assert lost.result == "worker w-gone (gone:1) lost"
    await eventually(lambda: (orphan.id, True) in setup.finished_ids())
    assert await setup.status_of(running.id) is InstanceStatus.RUNNING
    await worker.report(running.id, InstanceStatus.SUCCESS, "survived the restart")
    done = await setup.wait_status(running.id, InstanceStatus.SUCCESS)
    assert done.worker_addr == worker.address


async def test_a_worker_back_after_a_restart_frees_what_it_does_not_list_at_once(setup: Setup) -> None:
    await setup.start_dispatcher()
    await setup.stop_dispatcher()
    # Held by w1 when the scheduler died: one sent but never accepted, one running, one it still runs.
    sent = await setup.new_instance(status=InstanceStatus.READY)
    ran = await setup.new_instance(status=InstanceStatus.RUNNING)
    kept = await setup.new_instance(status=InstanceStatus.RUNNING)
    for held in (sent, ran, kept):
        await setup.store.update_instance(held.id, InstanceChange(worker_id="w1", worker_addr="old:1"))

    await setup.start_dispatcher()
    worker = ProtocolWorker(setup.target, worker_id="w1")
    setup.workers.append(worker)
    await worker.connect(running_instance_ids=(kept.id,))
    # No clock move: nothing waits a heartbeat timeout for instances the worker said it has not.
    lost = await setup.wait_status(ran.id, InstanceStatus.FAILED)
    assert lost.result == f"worker w1 ({lost.worker_addr}) lost"
    await eventually(lambda: [s.instance_id for s in worker.submits] == [sent.id])
    await setup.wait_status(sent.id, InstanceStatus.RUNNING)
    assert await setup.status_of(kept.id) is InstanceStatus.RUNNING
    assert setup.finished_ids() == [(ran.id, True)]


# -- batch resume where the task file is -----------------------------------------------------------


async def lost_batch_master(setup: Setup) -> tuple[Instance, ProtocolWorker, ProtocolWorker]:
    """A batch instance whose master w-master was lost while w-other stayed: (instance, master, other)."""
    batch = await setup.add_job("batch-job", class_name="demo", execute_mode=ExecuteMode.BATCH)
    master = await setup.worker("w-master")
    instance = await setup.dispatch(job=batch)
    await setup.wait_status(instance.id, InstanceStatus.RUNNING)
    other = await setup.worker("w-other")
    await master.drop()
    dispatcher = setup.dispatcher
    assert dispatcher is not None
    # The stream's end is seen before its instance is set aside (with its deadline): wait for the latter.
    await eventually(lambda: any(key.worker_id == "w-master" for key in dispatcher._state.orphans))
    await setup.advance_keeping(other, HEARTBEAT_TIMEOUT + 1)
    await setup.wait_status(instance.id, InstanceStatus.WAITING)  # submitted again, to resume
    return instance, master, other


async def test_a_lost_batch_master_is_waited_for_and_resumes_where_its_task_file_is(setup: Setup) -> None:
    await setup.start_dispatcher(batch_resume_wait=30)
    instance, master, other = await lost_batch_master(setup)
    # The other worker has room, yet the instance waits for a worker that holds its task file.
    await setup.advance_keeping(other, 10)
    assert other.submits == []
    await master.connect(task_file_instance_ids=(instance.id,))
    await eventually(lambda: [s.instance_id for s in master.submits] == [instance.id, instance.id])
    resumed = await setup.wait_status(instance.id, InstanceStatus.RUNNING)
    assert resumed.worker_id == "w-master"
    assert other.submits == []


async def test_a_batch_instance_starts_over_after_the_wait_and_the_stale_file_is_forgotten(
    setup: Setup,
) -> None:
    await setup.start_dispatcher(batch_resume_wait=30)
    instance, master, other = await lost_batch_master(setup)
    await setup.advance_keeping(other, 31)
    await eventually(lambda: [s.instance_id for s in other.submits] == [instance.id])
    await setup.wait_status(instance.id, InstanceStatus.RUNNING)
    await other.report(instance.id, InstanceStatus.SUCCESS, "started over")
    await setup.wait_status(instance.id, InstanceStatus.SUCCESS)
    # The old master comes back with the file of an instance that ended elsewhere: it may remove it.
    await master.connect(task_file_instance_ids=(instance.id,))
    await eventually(lambda: master.forgotten == [instance.id])
    assert master.submits[1:] == []


async def test_worker_told_to_kill_an_instance_that_already_finished(setup: Setup) -> None:
    await setup.start_dispatcher()
    finished = await setup.new_instance(status=InstanceStatus.FAILED)
    worker = ProtocolWorker(setup.target, worker_id="w1")
    setup.workers.append(worker)
    await worker.connect(running_instance_ids=(finished.id,))
    await eventually(lambda: [k.instance_id for k in worker.kills] == [finished.id])
