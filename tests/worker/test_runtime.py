"""The worker runtime against a minimal test scheduler speaking the real protocol over gRPC.

``StubScheduler`` is a real grpc.aio server on 127.0.0.1 built from the generated stubs: it accepts
Register (challenging the worker to prove the app key), sends submissions and kills, records every
message, and acknowledges reports unless told not to.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from sx.processors import (
    BroadcastProcessor,
    JobContext,
    Processor,
    ProcessResult,
    Registry,
    current_context,
    processor,
)
from sx.protos import (
    PEER_AUTH_HEADER,
    PROOF_WINDOW,
    make_proof,
    new_nonce,
    payload_digest,
    peer_channel,
    peer_subject,
    registration_proof,
)
from sx.protos.v1 import common_pb2, peer_pb2, peer_pb2_grpc, scheduler_pb2, scheduler_pb2_grpc
from sx.worker import Worker, WorkerRejected, WorkerSettings

APP_KEY = "secret"
DEADLINE = 20.0


async def eventually(check: Callable[[], object], *, within: float = DEADLINE, what: str = "") -> Any:
    """Poll ``check`` until it returns something truthy; fail naming ``what`` after ``within`` seconds."""
    deadline = time.monotonic() + within
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached within {within}s: {what or check}")
        await asyncio.sleep(0.01)


# -- the test scheduler ----------------------------------------------------------------------------


@dataclass(eq=False)
class _Session:
    worker_id: str
    register: scheduler_pb2.Register
    outbox: asyncio.Queue[scheduler_pb2.SchedulerMessage | None] = field(default_factory=asyncio.Queue)


class StubScheduler(scheduler_pb2_grpc.SchedulerServicer):
    """Accepts workers of group ``g`` in namespace ``ns`` with ``APP_KEY``; records what they send."""

    def __init__(self, *, ack: bool = True) -> None:
        self.ack = ack
        self.registers: list[scheduler_pb2.Register] = []
        self.answers: list[scheduler_pb2.ChallengeAnswer] = []
        self.reports: list[scheduler_pb2.InstanceReport] = []
        self.replies: list[scheduler_pb2.SubmitReply] = []
        self.heartbeats: list[scheduler_pb2.Heartbeat] = []
        self.deregistered: list[str] = []
        self.sessions: dict[str, _Session] = {}

    # The task-store calls serve parallel mode only; this scheduler has none, as an older one would.
    async def LoadTasks(self, request: Any, context: Any) -> Any:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "no task store")

    CreateTasks = UpdateTasks = QueryTasks = LoadTasks

    async def Connect(self, request_iterator: Any, context: Any) -> None:  # type: ignore[override]
        first = await context.read()
        register = first.register
        if register.group_id != "g":
            await context.abort(
                grpc.StatusCode.UNAUTHENTICATED,
                f"group {register.group_id} does not exist in namespace {register.namespace}",
            )
        challenge = scheduler_pb2.Challenge(server_nonce=new_nonce())
        await context.write(scheduler_pb2.SchedulerMessage(challenge=challenge))
        answer = (await context.read()).answer
        self.answers.append(answer)
        if answer.proof != registration_proof(APP_KEY, register, challenge.server_nonce):
            await context.abort(
                grpc.StatusCode.UNAUTHENTICATED,
                f"app key for group {register.group_id} in namespace {register.namespace} is wrong",
            )
        self.registers.append(register)
        session = _Session(worker_id=register.worker_id, register=register)
        self.sessions[register.worker_id] = session
        await context.write(
            scheduler_pb2.SchedulerMessage(
                registered=scheduler_pb2.Registered(worker_id=register.worker_id, heartbeat_interval_ms=200)
            )
        )
        writer = asyncio.create_task(self._write(context, session))
        try:
            while True:
                message = await context.read()
                if message is aio.EOF:
                    return
                body = message.WhichOneof("body")
                if body == "report":
                    self.reports.append(message.report)
                    if self.ack:
                        session.outbox.put_nowait(
                            scheduler_pb2.SchedulerMessage(
                                ack=scheduler_pb2.ReportAck(delivery_id=message.report.delivery_id)
                            )
                        )
                elif body == "submit_reply":
                    self.replies.append(message.submit_reply)
                elif body == "heartbeat":
                    self.heartbeats.append(message.heartbeat)
                elif body == "deregister":
                    self.deregistered.append(register.worker_id)
                    return
        finally:
            writer.cancel()
            if self.sessions.get(register.worker_id) is session:
                del self.sessions[register.worker_id]

    async def _write(self, context: Any, session: _Session) -> None:
        while True:
            message = await session.outbox.get()
            if message is None:
                return
            await context.write(message)

    def submit(self, worker_id: str, spec: common_pb2.InstanceSpec) -> None:
        self.sessions[worker_id].outbox.put_nowait(
            scheduler_pb2.SchedulerMessage(submit=scheduler_pb2.SubmitInstance(instance=spec))
        )

    def kill(self, worker_id: str, instance_id: int, reason: str = "") -> None:
        self.sessions[worker_id].outbox.put_nowait(
            scheduler_pb2.SchedulerMessage(
                kill=scheduler_pb2.KillInstance(instance_id=instance_id, reason=reason)
            )
        )

    def reports_of(self, instance_id: int) -> list[scheduler_pb2.InstanceReport]:
        return [r for r in self.reports if r.instance_id == instance_id]

    def final_of(self, instance_id: int) -> scheduler_pb2.InstanceReport | None:
        finals = [r for r in self.reports_of(instance_id) if r.status in (4, 5)]
        return finals[-1] if finals else None

    def reply_of(self, instance_id: int) -> scheduler_pb2.SubmitReply | None:
        replies = [r for r in self.replies if r.instance_id == instance_id]
        return replies[-1] if replies else None


class Endpoint:
    """A StubScheduler served on 127.0.0.1; ``stop`` and ``restart`` keep the port."""

    def __init__(self) -> None:
        self.port = 0
        self.server: aio.Server | None = None
        self.scheduler = StubScheduler()

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self, scheduler: StubScheduler | None = None) -> None:
        if scheduler is not None:
            self.scheduler = scheduler
        server = aio.server()
        scheduler_pb2_grpc.add_SchedulerServicer_to_server(self.scheduler, server)
        self.port = server.add_insecure_port(f"127.0.0.1:{self.port}")
        await server.start()
        self.server = server

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop(grace=None)
            self.server = None


@pytest.fixture
async def endpoint() -> AsyncIterator[Endpoint]:
    ep = Endpoint()
    await ep.start()
    yield ep
    await ep.stop()


# -- processors ------------------------------------------------------------------------------------

registry = Registry()
events: dict[str, list[Any]] = {}
lock = threading.Lock()


def record(key: str, value: Any) -> None:
    with lock:
        events.setdefault(key, []).append(value)


@processor(name="t.sync", registry=registry)
class SyncEcho(Processor):
    def process(self, ctx: JobContext) -> str:
        assert current_context() is ctx
        return f"sync job={ctx.job_parameters} inst={ctx.getInstanceParameters()}"


@processor(name="t.async", registry=registry)
class AsyncEcho(Processor):
    async def process(self, ctx: JobContext) -> ProcessResult:
        await asyncio.sleep(0)
        return ProcessResult.success(f"async {ctx.instance_parameters}")


@processor(name="t.raises", registry=registry)
class Raises(Processor):
    def process(self, ctx: JobContext) -> str:
        raise RuntimeError(f"boom {ctx.instance_id}")


@processor(name="t.async_forever", registry=registry)
class AsyncForever(Processor):
    async def process(self, ctx: JobContext) -> None:
        record(f"started-{ctx.instance_id}", True)
        await asyncio.sleep(3600)

    def kill(self, ctx: JobContext) -> None:
        record(f"kill-{ctx.instance_id}", ctx.is_cancelled)


@processor(name="t.blocking_forever", registry=registry)
class BlockingForever(Processor):
    def process(self, ctx: JobContext) -> str:
        record(f"started-{ctx.instance_id}", True)
        while not ctx.is_cancelled:
            time.sleep(0.01)
        record(f"saw-cancel-{ctx.instance_id}", True)
        return "stopped"


gates: dict[int, asyncio.Event] = {}


@processor(name="t.gated", registry=registry)
class Gated(Processor):
    """Waits until the test opens its gate (created on first use)."""

    async def process(self, ctx: JobContext) -> str:
        gate = gates.setdefault(ctx.instance_id, asyncio.Event())
        record(f"started-{ctx.instance_id}", True)
        await gate.wait()
        return "gated done"


@processor(name="t.broadcast", registry=registry)
class Broad(BroadcastProcessor):
    def pre_process(self, ctx: JobContext) -> None:
        record(f"pre-{ctx.instance_id}", ctx.worker_addr)
        if ctx.job_parameters == "fail-pre":
            raise ValueError("no preparation")

    def process(self, ctx: JobContext) -> str:
        record(f"process-{ctx.instance_id}", (ctx.sharding_id, ctx.sharding_num, ctx.worker_addr))
        if ctx.job_parameters == "fail-1" and ctx.sharding_id == 1:
            raise RuntimeError("shard one broke")
        return f"part{ctx.sharding_id}"

    def post_process(self, ctx: JobContext) -> str:
        record(
            f"post-{ctx.instance_id}",
            (dict(ctx.task_results), {k: int(v) for k, v in ctx.task_statuses.items()}),
        )
        return "+".join(ctx.task_results[k] for k in sorted(ctx.task_results))


@processor(name="t.broadcast_forever", registry=registry)
class BroadForever(BroadcastProcessor):
    async def process(self, ctx: JobContext) -> None:
        record(f"started-{ctx.instance_id}", ctx.sharding_id)
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            record(f"cancelled-{ctx.instance_id}", (ctx.sharding_id, ctx.is_cancelled))
            raise


_next_id = iter(range(1000, 10**6))


def spec(name: str = "", **fields: Any) -> common_pb2.InstanceSpec:
    instance_id = next(_next_id)
    values: dict[str, Any] = {
        "job_id": instance_id // 10,
        "instance_id": instance_id,
        "job_name": name or "job",
        "processor": name,
        "job_type": "python",
        "execute_mode": "standalone",
        "namespace": "ns",
        "group_id": "g",
        "schedule_time_ms": int(time.time() * 1000),
    }
    values.update(fields)
    return common_pb2.InstanceSpec(**values)


def settings(ep: Endpoint, **fields: Any) -> WorkerSettings:
    values: dict[str, Any] = {"server": ep.target, "namespace": "ns", "group_id": "g", "app_key": APP_KEY}
    values.update(fields)
    return WorkerSettings(**values)


async def started(ep: Endpoint, worker: Worker) -> Worker:
    """Start ``worker`` (unless ``async with`` did) and wait until the scheduler has its session."""
    if worker.address == "":
        await worker.__aenter__()
    await asyncio.wait_for(worker.connected.wait(), DEADLINE)
    await eventually(lambda: worker.worker_id in ep.scheduler.sessions, what="session registered")
    return worker


async def run_one(
    ep: Endpoint, worker: Worker, instance: common_pb2.InstanceSpec
) -> scheduler_pb2.InstanceReport:
    ep.scheduler.submit(worker.worker_id, instance)
    report: scheduler_pb2.InstanceReport = await eventually(
        lambda: ep.scheduler.final_of(instance.instance_id), what=f"final report of {instance.instance_id}"
    )
    return report


# -- standalone ------------------------------------------------------------------------------------


async def test_registers_with_its_identity(endpoint: Endpoint) -> None:
    async with Worker(settings(endpoint, labels={"zone": "a"}, concurrency=3), registry=registry) as worker:
        await asyncio.wait_for(worker.connected.wait(), DEADLINE)
        register = endpoint.scheduler.registers[0]
        assert register.worker_id == worker.worker_id
        assert (register.namespace, register.group_id) == ("ns", "g")
        # The key itself is in neither message the worker sent to register.
        sent = register.SerializeToString() + endpoint.scheduler.answers[0].SerializeToString()
        assert APP_KEY.encode() not in sent and len(register.client_nonce) >= 16
        assert register.address == worker.address
        assert dict(register.labels) == {"zone": "a"}
        assert "t.sync" in register.processors
        assert register.capacity == 3
        await eventually(lambda: endpoint.scheduler.heartbeats, what="a heartbeat")
        assert endpoint.scheduler.heartbeats[0].capacity == 3
    # The worker waits a moment (not forever) for the scheduler to end the stream after Deregister.
    await eventually(lambda: endpoint.scheduler.deregistered == [worker.worker_id], what="deregistered")


async def test_sync_and_async_processors_report_running_then_success(endpoint: Endpoint) -> None:
    async with Worker(settings(endpoint), registry=registry) as worker:
        await started(endpoint, worker)
        one = spec("t.sync", parameters="P", instance_parameters="I")
        two = spec("t.async", instance_parameters="I2")
        first = await run_one(endpoint, worker, one)
        second = await run_one(endpoint, worker, two)
        assert (first.status, first.result) == (4, "sync job=P inst=I")
        assert (second.status, second.result) == (4, "async I2")
        for instance in (one, two):
            reply = endpoint.scheduler.reply_of(instance.instance_id)
            assert reply is not None and reply.accepted
            statuses = [r.status for r in endpoint.scheduler.reports_of(instance.instance_id)]
            assert statuses == [3, 4]
            running, final = endpoint.scheduler.reports_of(instance.instance_id)
            assert running.start_time_ms > 0 and final.start_time_ms == running.start_time_ms
            assert final.end_time_ms >= final.start_time_ms
            assert running.delivery_id and running.delivery_id != final.delivery_id
        # Nothing of finished instances stays in memory.
        await eventually(lambda: not worker.running_instance_ids and not worker.running_task_instance_ids)


async def test_exception_fails_with_its_message(endpoint: Endpoint) -> None:
    async with Worker(settings(endpoint), registry=registry) as worker:
        await started(endpoint, worker)
        instance = spec("t.raises")
        report = await run_one(endpoint, worker, instance)
        assert report.status == 5
        assert report.result == f"RuntimeError: boom {instance.instance_id}"


async def test_unknown_processor_and_map_mode_are_refused(endpoint: Endpoint) -> None:
    async with Worker(settings(endpoint), registry=registry) as worker:
        await started(endpoint, worker)
        unknown = spec("t.nope")
        endpoint.scheduler.submit(worker.worker_id, unknown)
        reply = await eventually(lambda: endpoint.scheduler.reply_of(unknown.instance_id))
        assert not reply.accepted
        assert "processor 't.nope' is not registered here" in reply.message
        grid = spec("t.sync", execute_mode="grid")
        endpoint.scheduler.submit(worker.worker_id, grid)
        reply = await eventually(lambda: endpoint.scheduler.reply_of(grid.instance_id))
        assert not reply.accepted and "not supported" in reply.message
        assert endpoint.scheduler.reports_of(unknown.instance_id) == []


async def test_duplicate_submit_is_refused(endpoint: Endpoint) -> None:
    async with Worker(settings(endpoint), registry=registry) as worker:
        await started(endpoint, worker)
        instance = spec("t.gated")
        endpoint.scheduler.submit(worker.worker_id, instance)
        await eventually(lambda: events.get(f"started-{instance.instance_id}"))
        endpoint.scheduler.submit(worker.worker_id, instance)
        await eventually(
            lambda: len([r for r in endpoint.scheduler.replies if r.instance_id == instance.instance_id]) == 2
        )
        reply = endpoint.scheduler.reply_of(instance.instance_id)
        assert reply is not None and not reply.accepted and "still running" in reply.message
        gates[instance.instance_id].set()
        report = await eventually(lambda: endpoint.scheduler.final_of(instance.instance_id))
        assert report.status == 4


async def test_script_job_runs_without_a_processor(endpoint: Endpoint) -> None:
    async with Worker(settings(endpoint), registry=registry) as worker:
        await started(endpoint, worker)
        instance = spec("", job_type="shell", content="echo hello-from-shell")
        report = await run_one(endpoint, worker, instance)
        assert report.status == 4, report.result
        assert "hello-from-shell" in report.result


# -- kill ------------------------------------------------------------------------------------------


async def test_kill_async_processor(endpoint: Endpoint) -> None:
    async with Worker(settings(endpoint), registry=registry) as worker:
        await started(endpoint, worker)
        instance = spec("t.async_forever")
        endpoint.scheduler.submit(worker.worker_id, instance)
        await eventually(lambda: events.get(f"started-{instance.instance_id}"))
        endpoint.scheduler.kill(worker.worker_id, instance.instance_id, "by operator")
        report = await eventually(lambda: endpoint.scheduler.final_of(instance.instance_id))
        assert (report.status, report.result) == (5, "killed: by operator")
        assert events[f"kill-{instance.instance_id}"] == [True]  # kill hook saw the cancelled context
        await eventually(lambda: not worker.running_instance_ids)


async def test_kill_blocking_processor(endpoint: Endpoint) -> None:
    async with Worker(settings(endpoint), registry=registry) as worker:
        await started(endpoint, worker)
        instance = spec("t.blocking_forever")
        endpoint.scheduler.submit(worker.worker_id, instance)
        await eventually(lambda: events.get(f"started-{instance.instance_id}"))
        endpoint.scheduler.kill(worker.worker_id, instance.instance_id)
        report = await eventually(lambda: endpoint.scheduler.final_of(instance.instance_id))
        assert (report.status, report.result) == (5, "killed")
        await eventually(
            lambda: events.get(f"saw-cancel-{instance.instance_id}"), what="thread saw is_cancelled"
        )


async def test_kill_script_kills_its_process_group(endpoint: Endpoint, tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    async with Worker(settings(endpoint), registry=registry) as worker:
        await started(endpoint, worker)
        instance = spec("", job_type="shell", content=f"sleep 300 &\necho $! > {pid_file}\nwait\n")
        endpoint.scheduler.submit(worker.worker_id, instance)
        await eventually(lambda: pid_file.exists() and pid_file.read_text().strip(), what="script started")
        child = int(pid_file.read_text())
        endpoint.scheduler.kill(worker.worker_id, instance.instance_id)
        report = await eventually(lambda: endpoint.scheduler.final_of(instance.instance_id))
        assert report.status == 5 and report.result.startswith("killed")

        def gone() -> bool:
            try:
                os.kill(child, 0)
            except ProcessLookupError:
                return True
            return False

        await eventually(gone, what="the script's child process was killed")


# -- broadcast -------------------------------------------------------------------------------------


async def _two_workers(ep: Endpoint) -> tuple[Worker, Worker]:
    first = await started(ep, Worker(settings(ep, worker_id="w1"), registry=registry))
    second = await started(ep, Worker(settings(ep, worker_id="w2"), registry=registry))
    return first, second


def _refs(*workers: Worker) -> list[common_pb2.WorkerRef]:
    return [common_pb2.WorkerRef(worker_id=w.worker_id, address=w.address) for w in workers]


async def test_broadcast_runs_on_every_worker(endpoint: Endpoint) -> None:
    w1, w2 = await _two_workers(endpoint)
    try:
        instance = spec("t.broadcast", execute_mode="broadcast", workers=_refs(w1, w2))
        report = await run_one(endpoint, w1, instance)
        key = instance.instance_id
        assert (report.status, report.result) == (4, "part0+part1")
        assert events[f"pre-{key}"] == [w1.address]
        assert sorted(events[f"process-{key}"]) == sorted([(0, 2, w1.address), (1, 2, w2.address)])
        assert events[f"post-{key}"] == [({0: "part0", 1: "part1"}, {0: 4, 1: 4})]
        assert '"workerProgress"' in report.progress

        # Neither worker keeps anything of the instance.
        def forgotten() -> bool:
            return all(not w.running_instance_ids and not w.running_task_instance_ids for w in (w1, w2))

        await eventually(forgotten, what="both workers forgot the instance")
    finally:
        await asyncio.gather(w1.__aexit__(None, None, None), w2.__aexit__(None, None, None))


async def test_broadcast_fails_when_one_worker_fails(endpoint: Endpoint) -> None:
    w1, w2 = await _two_workers(endpoint)
    try:
        instance = spec("t.broadcast", execute_mode="broadcast", parameters="fail-1", workers=_refs(w1, w2))
        report = await run_one(endpoint, w1, instance)
        assert report.status == 5
        assert "sharding 1 on worker w2" in report.result and "shard one broke" in report.result
        (_results, statuses) = events[f"post-{instance.instance_id}"][0]
        assert statuses == {0: 4, 1: 5}
    finally:
        await asyncio.gather(w1.__aexit__(None, None, None), w2.__aexit__(None, None, None))


async def test_broadcast_kill_stops_every_worker(endpoint: Endpoint) -> None:
    w1, w2 = await _two_workers(endpoint)
    try:
        instance = spec("t.broadcast_forever", execute_mode="broadcast", workers=_refs(w1, w2))
        endpoint.scheduler.submit(w1.worker_id, instance)
        key = instance.instance_id
        await eventually(lambda: len(events.get(f"started-{key}", [])) == 2, what="both tasks started")
        endpoint.scheduler.kill(w1.worker_id, key, "stop it")
        report = await eventually(lambda: endpoint.scheduler.final_of(key))
        assert (report.status, report.result) == (5, "killed: stop it")
        await eventually(
            lambda: sorted(events.get(f"cancelled-{key}", [])) == [(0, True), (1, True)],
            what="both cancelled",
        )

        def forgotten() -> bool:
            return all(not w.running_instance_ids and not w.running_task_instance_ids for w in (w1, w2))

        await eventually(forgotten, what="both workers forgot the instance")
    finally:
        await asyncio.gather(w1.__aexit__(None, None, None), w2.__aexit__(None, None, None))


async def test_broadcast_pre_process_failure_dispatches_nothing(endpoint: Endpoint) -> None:
    async with Worker(settings(endpoint), registry=registry) as worker:
        await started(endpoint, worker)
        instance = spec("t.broadcast", execute_mode="broadcast", parameters="fail-pre", workers=_refs(worker))
        report = await run_one(endpoint, worker, instance)
        assert report.status == 5 and "pre_process failed: ValueError: no preparation" in report.result
        assert f"process-{instance.instance_id}" not in events


async def test_broadcast_unreachable_worker_fails_its_task(endpoint: Endpoint) -> None:
    async with Worker(settings(endpoint), registry=registry) as worker:
        await started(endpoint, worker)
        worker.alive_interval = 0.2
        gone = common_pb2.WorkerRef(worker_id="ghost", address="127.0.0.1:1")
        instance = spec("t.broadcast", execute_mode="broadcast", workers=[*_refs(worker), gone])
        report = await run_one(endpoint, worker, instance)
        assert report.status == 5 and "worker ghost (127.0.0.1:1)" in report.result


async def test_peer_service_answers_health_check_and_map_tasks(endpoint: Endpoint) -> None:
    worker = await started(endpoint, Worker(settings(endpoint), registry=registry))
    try:
        async with peer_channel(worker.address, app_key=APP_KEY) as channel:
            health = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service="")
            )
            assert health.status == health_pb2.HealthCheckResponse.SERVING
            peer = peer_pb2_grpc.PeerStub(channel)
            reply = await peer.MapTasks(peer_pb2.MapTasksRequest(instance_id=1))
            assert not reply.accepted
            assert reply.message == f"instance 1 has no map master on worker {worker.worker_id}"
            alive = await peer.CheckAlive(peer_pb2.CheckAliveRequest(instance_id=12345))
            assert not alive.alive and alive.worker_id == worker.worker_id
    finally:
        await worker.shutdown()


async def test_peer_calls_without_a_valid_app_key_proof_are_refused(endpoint: Endpoint) -> None:
    worker = await started(endpoint, Worker(settings(endpoint), registry=registry))
    start = peer_pb2.StartTasksRequest(
        instance=spec("t.broadcast", execute_mode="broadcast"), tasks=[peer_pb2.TaskRequest(task_id=1)]
    )
    other_request = peer_pb2.StartTasksRequest(
        instance=start.instance, tasks=[peer_pb2.TaskRequest(task_id=2)]
    )

    def proof(*, key: str = APP_KEY, now: float | None = None, **call: str) -> str:
        """A proof made with ``key`` for StartTasks of ``start`` on this worker, unless ``call`` says else."""
        made = {"method": "/sx.v1.Peer/StartTasks", "subject": peer_subject(worker.address)}
        made["digest"] = payload_digest(start)
        made.update(call)
        return make_proof(key, now=now, **made)

    try:
        async with aio.insecure_channel(worker.address) as channel:
            # The health service stays open to anyone.
            health = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
            assert health.status == health_pb2.HealthCheckResponse.SERVING
            peer = peer_pb2_grpc.PeerStub(channel)
            for given, why in [
                ("", "no proof"),
                (APP_KEY, "malformed"),
                (proof(now=time.time() - PROOF_WINDOW - 5), "window"),  # expired
                (proof(now=time.time() + PROOF_WINDOW + 5), "window"),  # from too far ahead
                (proof(key="not-the-key"), "does not match"),
                (proof(method="/sx.v1.Peer/CheckAlive"), "does not match"),
                (proof(subject=peer_subject("127.0.0.1:1")), "does not match"),  # for another worker
                (proof(digest=payload_digest(other_request)), "does not match"),  # for another request
            ]:
                metadata = ((PEER_AUTH_HEADER, given),) if given else ()
                with pytest.raises(aio.AioRpcError) as refused:
                    await peer.StartTasks(start, metadata=metadata)
                assert refused.value.code() is grpc.StatusCode.UNAUTHENTICATED
                assert why in (refused.value.details() or "")
        async with peer_channel(worker.address, app_key="not-the-key") as channel:
            with pytest.raises(aio.AioRpcError) as refused:
                await peer_pb2_grpc.PeerStub(channel).StartTasks(start)
            assert refused.value.code() is grpc.StatusCode.UNAUTHENTICATED
            assert "does not match" in (refused.value.details() or "")
        # Nothing was started by any refused call.
        assert not worker.running_task_instance_ids
        assert f"process-{start.instance.instance_id}" not in events
    finally:
        await worker.shutdown()


class PeerTap(grpc.GenericRpcHandler):  # type: ignore[misc]  # grpc is untyped
    """An on-path relay for Peer calls: forwards each call as it came and keeps what it saw (method,
    proof header, request bytes), as a listener on a network without TLS would."""

    def __init__(self, upstream: str) -> None:
        self.channel = aio.insecure_channel(upstream)
        self.calls: list[tuple[str, tuple[tuple[str, str], ...], bytes]] = []

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        method: str = handler_call_details.method

        async def relay(request: bytes, context: Any) -> bytes:
            metadata = tuple((k, v) for k, v in context.invocation_metadata() if k == PEER_AUTH_HEADER)
            self.calls.append((method, metadata, request))
            try:
                reply: bytes = await self.channel.unary_unary(method)(request, metadata=metadata)
                return reply
            except aio.AioRpcError as exc:
                await context.abort(exc.code(), exc.details() or "")
                raise

        return grpc.unary_unary_rpc_method_handler(relay)


async def test_a_captured_peer_call_cannot_be_replayed_altered_or_redirected(endpoint: Endpoint) -> None:
    # The worker advertises 127.0.0.2 and listens on 127.0.0.1: its peers reach it through the tap.
    worker = await started(
        endpoint, Worker(settings(endpoint, advertise_host="127.0.0.2"), registry=registry)
    )
    other = await started(endpoint, Worker(settings(endpoint), registry=registry))
    port = worker.address.rpartition(":")[2]
    tap = PeerTap(f"127.0.0.1:{port}")
    relay = aio.server()
    relay.add_generic_rpc_handlers((tap,))
    relay.add_insecure_port(worker.address)
    await relay.start()
    try:
        async with peer_channel(worker.address, app_key=APP_KEY) as channel:
            alive = await peer_pb2_grpc.PeerStub(channel).CheckAlive(peer_pb2.CheckAliveRequest())
        assert (alive.alive, alive.worker_id) == (True, worker.worker_id)  # the genuine call went through
        [(method, metadata, body)] = tap.calls
        assert method == "/sx.v1.Peer/CheckAlive" and metadata[0][0] == PEER_AUTH_HEADER
        altered = peer_pb2.CheckAliveRequest(instance_id=12345, master=True).SerializeToString()
        async with (
            aio.insecure_channel(f"127.0.0.1:{port}") as direct,
            aio.insecure_channel(other.address) as elsewhere,
        ):
            for channel, request, why in [
                (direct, body, "was used before"),  # the same call again
                (direct, altered, "does not match"),  # the captured proof on another request
                (elsewhere, body, "does not match"),  # the same call to another worker of the group
            ]:
                with pytest.raises(aio.AioRpcError) as refused:
                    await channel.unary_unary(method)(request, metadata=metadata)
                assert refused.value.code() is grpc.StatusCode.UNAUTHENTICATED
                assert why in (refused.value.details() or "")
    finally:
        await relay.stop(None)
        await tap.channel.close()
        await asyncio.gather(worker.shutdown(), other.shutdown())


# -- connection --------------------------------------------------------------------------------------


async def test_reconnect_resends_unacked_reports(endpoint: Endpoint) -> None:
    first = StubScheduler(ack=False)
    await endpoint.stop()
    await endpoint.start(first)
    async with Worker(settings(endpoint), registry=registry) as worker:
        await started(endpoint, worker)
        instance = spec("t.gated")
        first.submit(worker.worker_id, instance)
        running = await eventually(lambda: first.reports_of(instance.instance_id))
        # The scheduler goes away mid-instance; the instance finishes while the worker is disconnected.
        await endpoint.stop()
        await eventually(lambda: not worker.is_connected, what="worker noticed the broken stream")
        gates[instance.instance_id].set()
        await eventually(lambda: not worker.running_instance_ids)
        second = StubScheduler(ack=True)
        await endpoint.start(second)
        final = await eventually(lambda: second.final_of(instance.instance_id), what="final report re-sent")
        assert (final.status, final.result) == (4, "gated done")
        # The unacknowledged RUNNING report is re-sent with the same delivery id.
        assert running[0].delivery_id in {r.delivery_id for r in second.reports}
        assert second.registers[0].worker_id == worker.worker_id


async def test_running_instances_are_listed_on_reregister(endpoint: Endpoint) -> None:
    async with Worker(settings(endpoint), registry=registry) as worker:
        await started(endpoint, worker)
        instance = spec("t.gated")
        endpoint.scheduler.submit(worker.worker_id, instance)
        await eventually(lambda: endpoint.scheduler.reports_of(instance.instance_id))
        await endpoint.stop()
        await endpoint.start(StubScheduler())
        register = await eventually(lambda: endpoint.scheduler.registers and endpoint.scheduler.registers[0])
        assert list(register.running_instance_ids) == [instance.instance_id]
        gates[instance.instance_id].set()
        await eventually(lambda: endpoint.scheduler.final_of(instance.instance_id))


async def test_wrong_app_key_raises_worker_rejected(endpoint: Endpoint) -> None:
    worker = Worker(settings(endpoint, app_key="wrong"), registry=registry)
    with pytest.raises(WorkerRejected, match="app key for group g in namespace ns is wrong") as info:
        await asyncio.wait_for(worker.run(), DEADLINE)
    assert info.value.code == "UNAUTHENTICATED"
    await worker.shutdown()  # idempotent after a failed run


async def test_unknown_group_rejected_in_async_with(endpoint: Endpoint) -> None:
    with pytest.raises(WorkerRejected, match="group nope does not exist"):
        async with Worker(settings(endpoint, group_id="nope"), registry=registry):
            raise AssertionError("the block must not run for a refused worker")


# -- shutdown --------------------------------------------------------------------------------------


async def test_graceful_shutdown_lets_running_instance_finish(endpoint: Endpoint) -> None:
    worker = await started(endpoint, Worker(settings(endpoint), registry=registry))
    instance = spec("t.gated")
    endpoint.scheduler.submit(worker.worker_id, instance)
    await eventually(lambda: events.get(f"started-{instance.instance_id}"))
    stopping = asyncio.create_task(worker.shutdown(grace=30))
    # New work is refused while draining.
    late = spec("t.sync")
    endpoint.scheduler.submit(worker.worker_id, late)
    reply = await eventually(lambda: endpoint.scheduler.reply_of(late.instance_id))
    assert not reply.accepted and "shutting down" in reply.message
    gates[instance.instance_id].set()
    await asyncio.wait_for(stopping, DEADLINE)
    # Shutdown waits for the acknowledgements, and for Deregister to be read, a bounded time only.
    final = await eventually(lambda: endpoint.scheduler.final_of(instance.instance_id), what="final report")
    assert (final.status, final.result) == (4, "gated done")
    await eventually(lambda: endpoint.scheduler.deregistered == [worker.worker_id], what="deregistered")
    await worker.shutdown()  # idempotent


async def test_shutdown_after_grace_fails_running_instances(endpoint: Endpoint) -> None:
    worker = await started(endpoint, Worker(settings(endpoint), registry=registry))
    instance = spec("t.async_forever")
    endpoint.scheduler.submit(worker.worker_id, instance)
    await eventually(lambda: events.get(f"started-{instance.instance_id}"))
    await asyncio.wait_for(worker.shutdown(grace=0.1), DEADLINE)
    final = await eventually(lambda: endpoint.scheduler.final_of(instance.instance_id), what="final report")
    assert (final.status, final.result) == (5, "worker shut down")
