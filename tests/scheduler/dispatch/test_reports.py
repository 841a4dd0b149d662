"""What reports and submit replies do to instances (`_reports`), and whose reports count."""

from __future__ import annotations

from sx.processors import InstanceStatus
from sx.scheduler.store import Group, Namespace
from tests.scheduler.dispatch.test_harness import APP_KEY, GROUP, NS, ProtocolWorker, Setup, eventually

# -- submit and reports ---------------------------------------------------------------------------


async def test_submit_reaches_worker_and_reports_finish_the_instance(setup: Setup) -> None:
    await setup.start_dispatcher()
    worker = await setup.worker("w1")
    instance = await setup.dispatch()
    await eventually(lambda: len(worker.submits) == 1)
    spec = worker.submits[0]
    assert (spec.instance_id, spec.job_id, spec.processor) == (instance.id, setup.job.id, "demo")
    assert (spec.job_name, spec.parameters, spec.execute_mode) == ("demo-job", "p=1", "standalone")
    assert spec.schedule_time_ms == int(instance.schedule_time.timestamp() * 1000)
    assert (spec.namespace, spec.group_id) == (NS, GROUP)

    running = await setup.wait_status(instance.id, InstanceStatus.RUNNING)
    assert (running.worker_id, running.worker_addr) == ("w1", worker.address)
    assert running.start_time is not None

    first = await worker.report(instance.id, InstanceStatus.RUNNING)
    last = await worker.report(instance.id, InstanceStatus.SUCCESS, "all done")
    await eventually(lambda: worker.acks == [first, last])
    done = await setup.wait_status(instance.id, InstanceStatus.SUCCESS)
    assert (done.result, done.worker_id, done.worker_addr) == ("all done", "w1", worker.address)
    assert done.end_time is not None
    assert [(i.id, i.status, system) for i, system in setup.finished] == [
        (instance.id, InstanceStatus.SUCCESS, False)
    ]


async def test_duplicate_delivery_and_late_final_change_nothing(setup: Setup) -> None:
    await setup.start_dispatcher()
    worker = await setup.worker("w1")
    instance = await setup.dispatch()
    await setup.wait_status(instance.id, InstanceStatus.RUNNING)
    delivery = await worker.report(instance.id, InstanceStatus.SUCCESS, "first")
    await eventually(lambda: worker.acks == [delivery])
    # The same delivery again (its ack was lost), then a different final for a finished instance.
    await worker.report(instance.id, InstanceStatus.FAILED, "replayed", delivery_id=delivery)
    late = await worker.report(instance.id, InstanceStatus.FAILED, "late")
    await eventually(lambda: worker.acks == [delivery, delivery, late])
    done = await setup.store.get_instance(instance.id)
    assert done is not None
    assert (done.status, done.result) == (InstanceStatus.SUCCESS, "first")
    assert len(setup.finished) == 1


async def test_reports_sent_back_to_back_finish_each_instance_once_and_are_each_acknowledged(
    setup: Setup,
) -> None:
    await setup.start_dispatcher()
    worker = await setup.worker("w1", capacity=50)
    instances = [await setup.dispatch() for _ in range(30)]
    for instance in instances:
        await setup.wait_status(instance.id, InstanceStatus.RUNNING)
    # Written without waiting for acknowledgements: the scheduler reads them in batches.
    sent = []
    for instance in instances:
        sent.append(await worker.report_running(instance.id))
        sent.append(await worker.report(instance.id, InstanceStatus.SUCCESS, f"done {instance.id}"))
    # A final delivered again (its ack was lost) and a second final: acknowledged, changing nothing.
    sent.append(await worker.report(instances[0].id, InstanceStatus.FAILED, "again", delivery_id=sent[1]))
    sent.append(await worker.report(instances[1].id, InstanceStatus.FAILED, "late"))
    await eventually(lambda: sorted(worker.acks) == sorted(sent))
    for instance in instances:
        done = await setup.store.get_instance(instance.id)
        assert done is not None
        assert (done.status, done.result) == (InstanceStatus.SUCCESS, f"done {instance.id}")
    assert sorted(i.id for i, _ in setup.finished) == sorted(i.id for i in instances)


async def test_refused_submit_fails_when_no_other_worker_takes_it(setup: Setup) -> None:
    await setup.start_dispatcher()
    await setup.worker("w1", accept=False, refuse_message="processor demo is not registered here")
    instance = await setup.dispatch()
    failed = await setup.wait_status(instance.id, InstanceStatus.FAILED)
    assert failed.result == "refused by every worker: w1: processor demo is not registered here"


async def test_refused_submit_goes_to_another_worker(setup: Setup) -> None:
    await setup.start_dispatcher()
    refusing = await setup.worker("w1", accept=False, refuse_message="busy")
    accepting = await setup.worker("w2")
    instance = await setup.dispatch()
    await setup.wait_status(instance.id, InstanceStatus.RUNNING)
    assert [s.instance_id for s in accepting.submits] == [instance.id]
    assert [s.instance_id for s in refusing.submits] == [instance.id]


# -- ownership: namespace, group and the instance's current worker --------------------------------


async def test_worker_of_another_namespace_cannot_take_over_or_finish_an_instance(setup: Setup) -> None:
    await setup.store.create_namespace(Namespace(id="other", name="another namespace"))
    await setup.store.create_group(Group(namespace="other", group_id=GROUP, app_key=APP_KEY))
    await setup.start_dispatcher()
    instance = await setup.dispatch()  # no worker of its group yet: it waits
    intruder = ProtocolWorker(setup.target, worker_id="w-other", namespace="other")
    setup.workers.append(intruder)
    await intruder.connect(running_instance_ids=(instance.id,))
    await eventually(lambda: [k.instance_id for k in intruder.kills] == [instance.id])
    running = await intruder.report_running(instance.id)
    final = await intruder.report(instance.id, InstanceStatus.SUCCESS, "not mine to finish")
    await eventually(lambda: {running, final} <= set(intruder.acks))
    assert [k.instance_id for k in intruder.kills] == [instance.id, instance.id]
    untouched = await setup.store.get_instance(instance.id)
    assert untouched is not None
    assert (untouched.status, untouched.worker_id, untouched.result) == (InstanceStatus.WAITING, "", "")
    assert intruder.submits == [] and setup.finished == []
    # Its own group's worker still gets it.
    worker = await setup.worker("w1")
    await eventually(lambda: [s.instance_id for s in worker.submits] == [instance.id])
    await setup.wait_status(instance.id, InstanceStatus.RUNNING)


async def test_final_report_from_a_worker_no_longer_holding_the_instance_is_ignored(setup: Setup) -> None:
    await setup.start_dispatcher()
    first = await setup.worker("w1")
    instance = await setup.dispatch()
    await setup.wait_status(instance.id, InstanceStatus.RUNNING)
    second = await setup.worker("w2")
    # w2 says it runs the instance (e.g. a master resumed there): it holds it from now on.
    delivery = await second.report_running(instance.id)
    await eventually(lambda: delivery in second.acks)
    assert (await setup.wait_status(instance.id, InstanceStatus.RUNNING)).worker_id == "w2"
    late = await first.report(instance.id, InstanceStatus.FAILED, "late word of the old master")
    await eventually(lambda: late in first.acks)
    assert [k.instance_id for k in first.kills] == [instance.id]
    assert await setup.status_of(instance.id) is InstanceStatus.RUNNING
    assert setup.finished == []
    await second.report(instance.id, InstanceStatus.SUCCESS, "done by the holder")
    done = await setup.wait_status(instance.id, InstanceStatus.SUCCESS)
    assert (done.worker_id, done.result) == ("w2", "done by the holder")
