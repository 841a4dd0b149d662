"""The worker's control stream to the scheduler: register, heartbeats, submissions, kills, reports.

Reports are kept until the scheduler acknowledges them and are re-sent after every reconnect; the
scheduler de-duplicates them by delivery id. Messages queued together go as one when the scheduler takes
batches. Reconnecting (rounds over the addresses, backoff, redirects) is ``_reconnect``'s, and the
challenge-response registration ``_registration``'s.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Protocol

import grpc
from grpc import aio

from sx.protos import take_batch
from sx.protos.v1 import scheduler_pb2, scheduler_pb2_grpc
from sx.worker._addresses import SchedulerAddress
from sx.worker._reconnect import Reconnector
from sx.worker._registration import WorkerRejected, handshake

__all__ = [
    "DEFAULT_HEARTBEAT_INTERVAL",
    "ConnectionHandler",
    "SchedulerConnection",
    "WorkerRejected",
]

log = logging.getLogger("sx.worker")

DEFAULT_HEARTBEAT_INTERVAL = 3.0
LOG_BACKLOG = 8
"""Messages waiting to be written above which log batches are held back, so a report never waits
behind more than a few of them."""

_ALONE = frozenset({"log_batch", "deregister"})
"""Messages sent alone, never in a batch: a log batch is large by itself; a deregister is the last."""


class ConnectionHandler(Protocol):
    """What the connection asks of the worker."""

    def register_message(self) -> scheduler_pb2.Register:
        """The Register to send on every (re)connect, with the instances still running."""
        ...

    def heartbeat_message(self) -> scheduler_pb2.Heartbeat: ...

    def on_submit(self, submit: scheduler_pb2.SubmitInstance) -> scheduler_pb2.SubmitReply:
        """Accept or refuse a submission at once (the run itself goes on in the background)."""
        ...

    async def on_kill(self, kill: scheduler_pb2.KillInstance) -> None: ...

    def on_forget_task_files(self, forget: scheduler_pb2.ForgetTaskFiles) -> None:
        """Remove the batch task files of instances that ended (unless this worker runs them)."""
        ...


class SchedulerConnection:
    """Keeps one Connect stream open to a scheduler at one of ``addresses`` (``host:port`` entries) and
    moves messages between it and ``handler``."""

    def __init__(
        self,
        *,
        addresses: list[str],
        handler: ConnectionHandler,
        app_key: str,
        credentials: grpc.ChannelCredentials | None = None,
        connected: asyncio.Event | None = None,
        unsent_logs: Callable[[], list[scheduler_pb2.LogBatch]] | None = None,
    ) -> None:
        if not addresses:
            raise ValueError("addresses: at least one scheduler host:port is needed")
        self._handler = handler
        self._app_key = app_key
        self._unacked: OrderedDict[str, scheduler_pb2.InstanceReport] = OrderedDict()
        self._outbox: asyncio.Queue[scheduler_pb2.WorkerMessage | None] | None = None
        self._acked = asyncio.Event()
        self._background: set[asyncio.Task[Any]] = set()
        self._disconnected = asyncio.Event()
        self.connected = connected if connected is not None else asyncio.Event()
        self.registered: scheduler_pb2.Registered | None = None
        self.attempted = asyncio.Event()
        """Set once the worker registered, or a first round over the addresses failed."""
        self._unsent_logs = unsent_logs
        """Takes the log lines the worker could not ship yet; sent on registering, before the reports."""
        self._rounds = Reconnector(
            addresses=addresses,
            credentials=credentials,
            session=self._session,
            connected=self.connected,
            attempted=self.attempted,
        )

    @property
    def connects(self) -> int:
        """How many times the worker has registered (1 after the first connect)."""
        return self._rounds.connects

    @property
    def channel(self) -> aio.Channel | None:
        """The channel to the scheduler the worker last registered with, while ``run`` runs (unary
        calls such as the task store's)."""
        return self._rounds.channel

    @property
    def unacked(self) -> int:
        """Reports not yet acknowledged by the scheduler."""
        return len(self._unacked)

    @property
    def reporting_instance_ids(self) -> list[int]:
        """Instances whose reports the scheduler has not acknowledged yet (they are re-sent on a
        reconnect, so this worker still answers for them)."""
        return list(dict.fromkeys(report.instance_id for report in self._unacked.values()))

    def report(self, report: scheduler_pb2.InstanceReport) -> str:
        """Queue ``report`` for delivery (now, or after reconnecting); returns its delivery id."""
        delivery_id = uuid.uuid4().hex
        report.delivery_id = delivery_id
        self._unacked[delivery_id] = report
        self._send(scheduler_pb2.WorkerMessage(report=report))
        return delivery_id

    async def wait_acked(self, seconds: float) -> bool:
        """Wait until every report is acknowledged; False when ``seconds`` pass first."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while self._unacked:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            self._acked.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._acked.wait(), timeout=remaining)
        return True

    def can_send_logs(self, *, force: bool = False) -> bool:
        """Registered, and the stream keeps up (with ``force``: registered, e.g. ahead of a final
        report): a log batch sent now goes out. Otherwise lines wait, bounded, in the log shipper."""
        outbox = self._outbox
        return outbox is not None and self.connected.is_set() and (force or outbox.qsize() < LOG_BACKLOG)

    def send_logs(self, message: scheduler_pb2.WorkerMessage, *, force: bool = False) -> bool:
        """Send a message carrying a batch of log lines (``log_batch``: built in it, as wrapping a batch
        would copy it) when ``can_send_logs``; False (not sent) otherwise."""
        if not self.can_send_logs(force=force):
            return False
        self._send(message)
        return True

    def send_heartbeat(self) -> None:
        """Send a heartbeat now (when connected), e.g. to say the worker started draining."""
        self._send(scheduler_pb2.WorkerMessage(heartbeat=self._handler.heartbeat_message()))

    def _send(self, message: scheduler_pb2.WorkerMessage) -> None:
        if self._outbox is not None and self.connected.is_set():
            self._outbox.put_nowait(message)

    async def run(self) -> None:
        """Connect and serve until ``close``; raises ``WorkerRejected`` when registration is refused."""
        await self._rounds.run()

    async def _session(self, address: SchedulerAddress, channel: aio.Channel) -> None:
        """One stream from Register to its end (``connects`` counts it when it registered)."""
        stub = scheduler_pb2_grpc.SchedulerStub(channel)
        call = stub.Connect()
        outbox: asyncio.Queue[scheduler_pb2.WorkerMessage | None] = asyncio.Queue()
        writer: asyncio.Task[None] | None = None
        heartbeat: asyncio.Task[None] | None = None
        try:
            registered = await handshake(
                call,
                self._handler.register_message(),
                app_key=self._app_key,
                dialing=self._rounds.dialing,
                follow=self._rounds.follow,
            )
            if registered is None:
                return
            self.registered = registered
            await self._rounds.adopt(address, channel)
            interval_ms = registered.heartbeat_interval_ms
            interval = interval_ms / 1000 if interval_ms > 0 else DEFAULT_HEARTBEAT_INTERVAL
            # Swap in the new outbox and queue every unacknowledged report before anything new.
            self._outbox = outbox
            # Lines logged while away go first: they precede the reports of the runs that logged them.
            for batch in self._unsent_logs() if self._unsent_logs is not None else ():
                outbox.put_nowait(scheduler_pb2.WorkerMessage(log_batch=batch))
            for report in self._unacked.values():
                outbox.put_nowait(scheduler_pb2.WorkerMessage(report=report))
            self._disconnected.clear()
            self.connected.set()
            self.attempted.set()
            log.info(
                "registered with scheduler %s as %s (%d report(s) to re-send)",
                address,
                registered.worker_id,
                len(self._unacked),
            )
            batches = registered.takes_batches
            writer = asyncio.create_task(self._write(call, outbox, batches), name="sx-scheduler-writer")
            heartbeat = asyncio.create_task(self._heartbeats(outbox, interval), name="sx-heartbeat")
            await self._read(call, outbox)
        finally:
            self.connected.clear()
            self._disconnected.set()
            for task in (heartbeat, writer):
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await task
            if self._outbox is outbox:
                self._outbox = None
            call.cancel()

    async def _read(self, call: Any, outbox: asyncio.Queue[scheduler_pb2.WorkerMessage | None]) -> None:
        while True:
            message = await call.read()
            if message is aio.EOF:
                if not self._rounds.closing:
                    log.warning(
                        "scheduler %s closed the stream (%s)", self._rounds.dialing, await call.code()
                    )
                return
            batched = message.WhichOneof("body") == "batch"
            for inner in message.batch.messages if batched else (message,):
                if not self._on_message(inner, outbox):
                    return

    def _on_message(
        self,
        message: scheduler_pb2.SchedulerMessage,
        outbox: asyncio.Queue[scheduler_pb2.WorkerMessage | None],
    ) -> bool:
        """Act on one message of the scheduler's; False when the stream is to end (a redirect)."""
        body = message.WhichOneof("body")
        if body == "redirect":
            self._rounds.follow(message.redirect)
            return False
        if body == "ack":
            if self._unacked.pop(message.ack.delivery_id, None) is not None and not self._unacked:
                self._acked.set()
        elif body == "submit":
            try:
                reply = self._handler.on_submit(message.submit)
            except Exception as exc:
                log.exception("submit of instance %s failed", message.submit.instance.instance_id)
                reply = scheduler_pb2.SubmitReply(
                    instance_id=message.submit.instance.instance_id, accepted=False, message=str(exc)
                )
            outbox.put_nowait(scheduler_pb2.WorkerMessage(submit_reply=reply))
        elif body == "kill":
            self._spawn(self._handler.on_kill(message.kill))
        elif body == "forget_task_files":
            self._handler.on_forget_task_files(message.forget_task_files)
        else:
            log.warning("scheduler %s sent an unexpected %s", self._rounds.dialing, body)
        return True

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.create_task(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _write(
        self, call: Any, outbox: asyncio.Queue[scheduler_pb2.WorkerMessage | None], batches: bool
    ) -> None:
        """Send what is queued, in order, until None; with ``batches`` (the scheduler takes them),
        messages queued together go as one."""
        taken: list[scheduler_pb2.WorkerMessage | None] = []  # taken from the queue, not yet sent
        while True:
            message = taken.pop() if taken else await outbox.get()
            if message is None:
                await call.done_writing()
                return
            if not batches:
                await call.write(message)
                continue
            batch, taken = take_batch(outbox, message, alone=_ALONE)
            if len(batch) == 1:
                await call.write(batch[0])
            else:
                await call.write(
                    scheduler_pb2.WorkerMessage(batch=scheduler_pb2.WorkerMessages(messages=batch))
                )

    async def _heartbeats(
        self, outbox: asyncio.Queue[scheduler_pb2.WorkerMessage | None], interval: float
    ) -> None:
        while True:
            outbox.put_nowait(scheduler_pb2.WorkerMessage(heartbeat=self._handler.heartbeat_message()))
            await asyncio.sleep(interval)

    async def close(self, *, reason: str, linger: float = 2.0) -> None:
        """Deregister (when connected) and end the stream; ``run`` then returns."""
        if self._rounds.closing:
            return
        outbox = self._outbox if self.connected.is_set() else None
        self._rounds.closing = True
        if outbox is not None:
            outbox.put_nowait(scheduler_pb2.WorkerMessage(deregister=scheduler_pb2.Deregister(reason=reason)))
            outbox.put_nowait(None)
            # Give the scheduler a moment to end its side after reading Deregister.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._disconnected.wait(), timeout=linger)
        self._rounds.stop()
        for task in list(self._background):
            task.cancel()
