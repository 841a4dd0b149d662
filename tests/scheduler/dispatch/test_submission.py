"""The dispatch loop (`_submission`): round robin, processors, capacity, the no-worker grace, rescans."""

from __future__ import annotations

from sx.processors import ExecuteMode, InstanceStatus, JobType
from tests.scheduler.dispatch.test_harness import Setup, eventually

# -- submission ---------------------------------------------------------------------------------


async def test_round_robin_across_workers(setup: Setup) -> None:
    await setup.start_dispatcher()
    first = await setup.worker("w1")
    second = await setup.worker("w2")
    for _ in range(4):
        await setup.dispatch()
    await eventually(lambda: len(first.submits) + len(second.submits) == 4)
    assert (len(first.submits), len(second.submits)) == (2, 2)


async def test_worker_without_the_processor_is_skipped(setup: Setup) -> None:
    await setup.start_dispatcher()
    other = await setup.worker("w-other", processors=("something_else",))
    serving = await setup.worker("w-demo")
    for _ in range(3):
        await setup.dispatch()
    await eventually(lambda: len(serving.submits) == 3)
    assert other.submits == []
    # A script job needs no processor: any worker of the group runs it.
    script = await setup.add_job("script", job_type=JobType.SHELL, content="echo hi")
    for _ in range(2):
        await setup.dispatch(job=script)
    await eventually(lambda: len(other.submits) == 1 and len(serving.submits) == 4)
    assert other.submits[0].content == "echo hi"


async def test_worker_at_capacity_gets_more_once_one_finishes(setup: Setup) -> None:
    await setup.start_dispatcher()
    worker = await setup.worker("w1", capacity=1)
    one = await setup.dispatch()
    two = await setup.dispatch()
    await eventually(lambda: len(worker.submits) == 1)
    assert worker.submits[0].instance_id == one.id
    assert await setup.status_of(two.id) is InstanceStatus.WAITING
    await worker.report(one.id, InstanceStatus.SUCCESS, "ok")
    await eventually(lambda: len(worker.submits) == 2)
    assert worker.submits[1].instance_id == two.id


async def test_broadcast_submit_lists_the_group_workers(setup: Setup) -> None:
    await setup.start_dispatcher()
    first = await setup.worker("w1")
    second = await setup.worker("w2")
    await setup.worker("w3", processors=("other",))
    job = await setup.add_job("bc", class_name="demo", execute_mode=ExecuteMode.BROADCAST)
    await setup.dispatch(job=job)
    await eventually(lambda: len(first.submits) + len(second.submits) == 1)
    [spec] = first.submits + second.submits
    assert spec.execute_mode == "broadcast"
    assert sorted((w.worker_id, w.address) for w in spec.workers) == sorted(
        [("w1", first.address), ("w2", second.address)]
    )


# -- waiting --------------------------------------------------------------------------------------


async def test_no_worker_fails_after_the_grace(setup: Setup) -> None:
    await setup.start_dispatcher(no_worker_grace=5)
    instance = await setup.dispatch()
    await setup.clock.advance(4)
    assert await setup.status_of(instance.id) is InstanceStatus.WAITING
    await setup.clock.advance(2)
    failed = await setup.wait_status(instance.id, InstanceStatus.FAILED)
    assert failed.result == "no worker online in group g of namespace ns"
    await setup.wait_finished([(instance.id, False)])


async def test_worker_arriving_within_the_grace_gets_the_instance(setup: Setup) -> None:
    await setup.start_dispatcher(no_worker_grace=5)
    instance = await setup.dispatch()
    await setup.clock.advance(3)
    worker = await setup.worker("w1")
    await eventually(lambda: [s.instance_id for s in worker.submits] == [instance.id])


async def test_delayed_instance_waits_for_its_schedule_time(setup: Setup) -> None:
    await setup.start_dispatcher()
    worker = await setup.worker("w1")
    later = await setup.new_instance(delay=60)
    now = await setup.new_instance()
    assert setup.dispatcher is not None
    await setup.dispatcher.instance_created(later)
    await setup.dispatcher.instance_created(now)
    # The pass that submitted the due instance saw the delayed one too and left it waiting.
    await eventually(lambda: [s.instance_id for s in worker.submits] == [now.id])
    assert await setup.status_of(later.id) is InstanceStatus.WAITING
    await setup.advance_keeping(worker, 61)
    await eventually(lambda: [s.instance_id for s in worker.submits] == [now.id, later.id])


# -- WAITING instances dispatch never heard of ------------------------------------------------------


async def test_waiting_instance_created_behind_the_dispatchers_back_is_dispatched(setup: Setup) -> None:
    await setup.start_dispatcher()
    worker = await setup.worker("w1")
    # Created in the store, but whoever made it failed to hand it to dispatch.
    instance = await setup.new_instance()
    await setup.advance_keeping(worker, 5)
    assert worker.submits == []
    await setup.advance_keeping(worker, 25)
    await eventually(lambda: [s.instance_id for s in worker.submits] == [instance.id])
    await setup.wait_status(instance.id, InstanceStatus.RUNNING)


async def test_an_instance_the_protocol_cannot_carry_fails_alone_and_the_pass_goes_on(setup: Setup) -> None:
    await setup.start_dispatcher()
    worker = await setup.worker("w1")
    # A definition stored before the API bounded its numbers: max_attempt does not fit the wire's int32.
    good = setup.job
    bad = await setup.store.create_job(
        namespace=good.namespace,
        group_id=good.group_id,
        spec=good.spec.model_copy(update={"name": "too-big", "max_attempt": 10**30}),
        enabled=True,
        managed=False,
        next_fire_time=None,
    )
    poisoned = await setup.new_instance(job=bad)
    fine = await setup.new_instance(job=good)
    assert setup.dispatcher is not None
    await setup.dispatcher.instance_created(poisoned)
    await setup.dispatcher.instance_created(fine)
    failed = await setup.wait_status(poisoned.id, InstanceStatus.FAILED)
    assert failed.result.startswith("cannot be sent to a worker: ValueError"), failed.result
    await eventually(lambda: [s.instance_id for s in worker.submits] == [fine.id])
    await setup.wait_finished([(poisoned.id, False)])
