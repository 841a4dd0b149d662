"""The worker's control stream to the scheduler: register, heartbeats, submissions, kills, reports.

Reports are kept until the scheduler acknowledges them and are re-sent after every reconnect; the
scheduler de-duplicates them by delivery id. The stream is re-opened with exponential backoff (0.1 s
doubling to 5 s, with jitter) until the worker closes it; a refused registration ends the worker.

With several scheduler addresses, each reconnect is a round over all of them (names resolved anew),
the one that registered last first: an address that refuses, cannot be reached within
``CONNECT_TIMEOUT`` or does not register moves the round on at once, and only a round in which none
registered waits a backoff delay. A refused registration ends the worker when no address of the round
took it.

Registration is challenge-response: Register carries a fresh nonce and no key, the scheduler answers a
challenge, and the worker proves the group's app key with an HMAC over both nonces and its Register.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import uuid
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Protocol

import grpc
from grpc import aio

from sx.processors import SxError
from sx.protos import new_nonce, registration_proof, take_batch
from sx.protos.v1 import scheduler_pb2, scheduler_pb2_grpc
from sx.worker._addresses import SchedulerAddress

__all__ = [
    "BACKOFF_FIRST",
    "BACKOFF_MAX",
    "CONNECT_TIMEOUT",
    "DEFAULT_HEARTBEAT_INTERVAL",
    "ConnectionHandler",
    "SchedulerConnection",
    "WorkerRejected",
    "backoff_delays",
]

log = logging.getLogger("sx.worker")

BACKOFF_FIRST = 0.1
BACKOFF_MAX = 5.0
DEFAULT_HEARTBEAT_INTERVAL = 3.0
CONNECT_TIMEOUT = 5.0
"""With several addresses, seconds one gets to accept a connection before the round moves on."""
LOG_BACKLOG = 8
"""Messages waiting to be written above which log batches are held back, so a report never waits
behind more than a few of them."""
UNREACHABLE_HINT_AFTER = 30.0
"""Seconds of failed rounds before the worker says what to check; it says it again at this interval
doubled each time. Repeated failures in between are logged at DEBUG only, so the log does not fill up."""

_ALONE = frozenset({"log_batch", "deregister"})
"""Messages sent alone, never in a batch: a log batch is large by itself; a deregister is the last."""
_MAX_HOPS = 3
"""Redirects followed within one round (a group moving twice meanwhile; never a loop)."""

# The scheduler ends the stream with these when it will never accept this worker as configured.
_FATAL_CODES = (
    grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.PERMISSION_DENIED,
)


class WorkerRejected(SxError):
    """The scheduler refused to register this worker (wrong app key, unknown group, bad request).

    ``code`` is the gRPC status name and ``message`` the scheduler's explanation.
    """

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        self.message = message
        super().__init__(f"the scheduler refused this worker ({code}): {message}")


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


def backoff_delays(first: float = BACKOFF_FIRST, cap: float = BACKOFF_MAX) -> Any:
    """Endless reconnect delays: ``first`` doubling up to ``cap``, each with ±20 % jitter."""
    delay = first
    while True:
        yield delay * random.uniform(0.8, 1.2)
        delay = min(delay * 2, cap)


def _loop_time() -> float:
    return asyncio.get_running_loop().time()


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
    ) -> None:
        if not addresses:
            raise ValueError("addresses: at least one scheduler host:port is needed")
        self._entries = list(addresses)
        self._server = ",".join(addresses)
        self._dialing = self._server
        """The address of the stream being set up or served, for log lines."""
        self._registered_at: SchedulerAddress | None = None
        self._handler = handler
        self._app_key = app_key
        self._credentials = credentials
        self._unacked: OrderedDict[str, scheduler_pb2.InstanceReport] = OrderedDict()
        self._outbox: asyncio.Queue[scheduler_pb2.WorkerMessage | None] | None = None
        self._closing = False
        self._closed = asyncio.Event()
        self._acked = asyncio.Event()
        self._background: set[asyncio.Task[Any]] = set()
        self._current: asyncio.Task[bool] | None = None
        """The round over the addresses under way, which ``close`` cancels."""
        self._disconnected = asyncio.Event()
        self.connected = connected if connected is not None else asyncio.Event()
        self.registered: scheduler_pb2.Registered | None = None
        self.attempted = asyncio.Event()
        """Set once the worker registered, or a first round over the addresses failed."""
        self.connects = 0
        """How many times the worker has registered (1 after the first connect)."""
        self.unsent_logs: Callable[[], list[scheduler_pb2.LogBatch]] | None = None
        """Takes the log lines the worker could not ship yet; sent on registering, before the reports."""
        self.channel: aio.Channel | None = None
        """The channel to the scheduler the worker last registered with, while ``run`` runs (unary
        calls such as the task store's)."""
        self._failing_since: float | None = None
        """Loop time of the first of the failed rounds in a row, None while registered."""
        self._next_hop: SchedulerAddress | None = None
        """Where the last Redirect sent the worker (the replica dispatching its group): tried first."""
        self._retry_after: float | None = None
        """Seconds until the next round when a Redirect said no replica holds the group yet."""

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
        delays = backoff_delays()
        hint_at = UNREACHABLE_HINT_AFTER
        try:
            while not self._closing:
                round_ = asyncio.create_task(self._round(), name="sx-scheduler-round")
                self._current = round_
                try:
                    # wait() rather than await: close() may cancel the round, which must not end run()
                    # with CancelledError.
                    await asyncio.wait({round_})
                except asyncio.CancelledError:
                    round_.cancel()
                    raise
                finally:
                    self._current = None
                if round_.cancelled():
                    break
                level = logging.INFO
                if round_.result():  # raises WorkerRejected
                    delays = backoff_delays()
                    self._failing_since, hint_at = None, UNREACHABLE_HINT_AFTER
                else:
                    self.attempted.set()
                    if self._failing_since is None:
                        self._failing_since = _loop_time()
                    else:
                        level = logging.DEBUG
                        if _loop_time() - self._failing_since >= hint_at:
                            self._hint_unreachable()
                            hint_at *= 2
                if self._closing:
                    break
                delay = next(delays)
                if self._retry_after is not None:  # the group gets an owner within a moment
                    delay, self._retry_after = self._retry_after, None
                log.log(level, "reconnecting to scheduler %s in %.2fs", self._server, delay)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._closed.wait(), timeout=delay)
        finally:
            self.attempted.set()
            self.connected.clear()
            channel, self.channel, self._registered_at = self.channel, None, None
            if channel is not None:
                await channel.close()

    def _failure_level(self) -> int:
        """WARNING for the first failed round in a row, DEBUG for the repeats (see _hint_unreachable)."""
        return logging.DEBUG if self._failing_since is not None else logging.WARNING

    def _hint_unreachable(self) -> None:
        assert self._failing_since is not None
        log.warning(
            "no scheduler at %s has registered this worker for %.0fs; still retrying. Check the address, "
            "TLS settings and app key with: sx-worker check --server %s",
            self._server,
            _loop_time() - self._failing_since,
            self._server,
        )

    async def _round(self) -> bool:
        """Try each address once, the one registered with last first; True when one registered (its
        stream has ended since). Raises ``WorkerRejected`` when one refused and none registered."""
        addresses = await self._resolve()
        several = len(addresses) > 1
        refused: WorkerRejected | None = None
        hops = 0
        queue = list(addresses)
        while queue:
            address = queue.pop(0)
            if self._closing:
                return False
            hop = self._next_hop
            try:
                if await self._attempt(address, several=several or hop is not None):
                    return True
            except WorkerRejected as exc:
                if not several:
                    raise
                log.warning("scheduler %s refused this worker (%s): %s", address, exc.code, exc.message)
                refused = exc
            if self._retry_after is not None:
                return False  # no replica holds the group yet: ask again in a moment
            if self._next_hop is not None and self._next_hop != hop and hops < _MAX_HOPS:
                hops += 1  # sent on to the replica dispatching the group: go there now
                queue.insert(0, self._next_hop)
        if refused is not None and not self._closing:
            raise refused
        return False

    async def _resolve(self) -> list[SchedulerAddress]:
        """Every address of every entry as DNS says now, rotated so the last good one comes first."""
        addresses: list[SchedulerAddress] = []
        for entry in self._entries:
            try:
                addresses += await SchedulerAddress.resolve(entry)
            except OSError as exc:
                log.warning("scheduler %s", exc)
        if self._registered_at in addresses:
            first = addresses.index(self._registered_at)
            addresses = addresses[first:] + addresses[:first]
        hop = self._next_hop
        if hop is not None:
            addresses = [hop, *(a for a in addresses if a != hop)]
        return addresses

    async def _attempt(self, address: SchedulerAddress, *, several: bool) -> bool:
        """One stream to ``address``; True when it registered (and has ended since, however). A
        failure is logged; ``WorkerRejected`` when the scheduler refused this worker."""
        self._dialing = str(address)
        connects = self.connects
        # The registered channel is kept across reconnects to its address; any other is fresh, so an
        # address that failed before gets a connection attempt now rather than after gRPC's own backoff.
        channel = self.channel if address == self._registered_at else None
        if channel is None:
            channel = address.channel(self._credentials)
        try:
            if several and not await _connects(channel, CONNECT_TIMEOUT):
                level = self._failure_level()
                log.log(level, "scheduler %s: not reachable, trying the next address", address)
                return False
            try:
                await self._session(address, channel)
            except WorkerRejected:
                raise
            except aio.AioRpcError as exc:
                level = self._failure_level()
                log.log(level, "scheduler %s: stream failed: %s %s", address, exc.code().name, exc.details())
            except Exception as exc:  # any other stream failure is worth a reconnect, not the worker
                log.log(self._failure_level(), "scheduler %s: stream failed: %r", address, exc)
            return self.connects > connects
        finally:
            if channel is not self.channel:
                await channel.close()

    async def _adopt(self, address: SchedulerAddress, channel: aio.Channel) -> None:
        """``channel`` to ``address`` just registered: it becomes the worker's channel."""
        previous, self.channel, self._registered_at = self.channel, channel, address
        if previous is not None and previous is not channel:
            await previous.close()

    async def _session(self, address: SchedulerAddress, channel: aio.Channel) -> None:
        """One stream from Register to its end (``connects`` counts it when it registered)."""
        stub = scheduler_pb2_grpc.SchedulerStub(channel)
        call = stub.Connect()
        outbox: asyncio.Queue[scheduler_pb2.WorkerMessage | None] = asyncio.Queue()
        writer: asyncio.Task[None] | None = None
        heartbeat: asyncio.Task[None] | None = None
        try:
            register = self._handler.register_message()
            register.client_nonce = new_nonce()
            register.takes_batches = True
            await call.write(scheduler_pb2.WorkerMessage(register=register))
            challenge = await self._reply(call, "challenge", "Register")
            if challenge is None:
                return
            # An empty key sends an empty proof: the scheduler then says the key is missing.
            proof = (
                registration_proof(self._app_key, register, challenge.challenge.server_nonce)
                if self._app_key
                else b""
            )
            await call.write(scheduler_pb2.WorkerMessage(answer=scheduler_pb2.ChallengeAnswer(proof=proof)))
            welcome = await self._reply(call, "registered", "the challenge answer")
            if welcome is None:
                return
            self.registered = welcome.registered
            self.connects += 1
            await self._adopt(address, channel)
            interval_ms = welcome.registered.heartbeat_interval_ms
            interval = interval_ms / 1000 if interval_ms > 0 else DEFAULT_HEARTBEAT_INTERVAL
            # Swap in the new outbox and queue every unacknowledged report before anything new.
            self._outbox = outbox
            # Lines logged while away go first: they precede the reports of the runs that logged them.
            for batch in self.unsent_logs() if self.unsent_logs is not None else ():
                outbox.put_nowait(scheduler_pb2.WorkerMessage(log_batch=batch))
            for report in self._unacked.values():
                outbox.put_nowait(scheduler_pb2.WorkerMessage(report=report))
            self._disconnected.clear()
            self.connected.set()
            self.attempted.set()
            log.info(
                "registered with scheduler %s as %s (%d report(s) to re-send)",
                address,
                welcome.registered.worker_id,
                len(self._unacked),
            )
            batches = welcome.registered.takes_batches
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

    async def _reply(self, call: Any, kind: str, to: str) -> scheduler_pb2.SchedulerMessage | None:
        """The scheduler's next message during registration when it is a ``kind``; None (after a
        warning) when it is not or the stream ended; raises ``WorkerRejected`` when it refused."""
        try:
            message = await call.read()
        except aio.AioRpcError as exc:
            if exc.code() in _FATAL_CODES:
                raise WorkerRejected(exc.code().name, exc.details() or "") from None
            raise
        if message is aio.EOF:
            code = await call.code()
            if code in _FATAL_CODES:
                raise WorkerRejected(code.name, await call.details() or "")
            log.warning("scheduler %s ended the stream before registering (%s)", self._dialing, code)
            return None
        got = message.WhichOneof("body")
        if got == "redirect":
            self._follow(message.redirect)
            return None
        if got != kind:
            log.warning("scheduler %s answered %s with %s, not %s", self._dialing, to, got, kind)
            return None
        reply: scheduler_pb2.SchedulerMessage = message
        return reply

    async def _read(self, call: Any, outbox: asyncio.Queue[scheduler_pb2.WorkerMessage | None]) -> None:
        while True:
            message = await call.read()
            if message is aio.EOF:
                if not self._closing:
                    log.warning("scheduler %s closed the stream (%s)", self._dialing, await call.code())
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
            self._follow(message.redirect)
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
            log.warning("scheduler %s sent an unexpected %s", self._dialing, body)
        return True

    def _follow(self, redirect: scheduler_pb2.Redirect) -> None:
        """Another scheduler replica dispatches this worker's group: connect there next (or, when none
        does yet, try again after the delay it says)."""
        if redirect.address:
            self._next_hop = SchedulerAddress(redirect.address, redirect.address)
            log.info("scheduler %s: %s; connecting there", self._dialing, redirect.reason)
        else:
            self._next_hop = None
            self._retry_after = max(redirect.retry_after_ms, 100) / 1000
            log.info("scheduler %s: %s; asking again shortly", self._dialing, redirect.reason)

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
        if self._closing:
            return
        outbox = self._outbox if self.connected.is_set() else None
        self._closing = True
        if outbox is not None:
            outbox.put_nowait(scheduler_pb2.WorkerMessage(deregister=scheduler_pb2.Deregister(reason=reason)))
            outbox.put_nowait(None)
            # Give the scheduler a moment to end its side after reading Deregister.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._disconnected.wait(), timeout=linger)
        self._closed.set()
        if self._current is not None:
            self._current.cancel()
        for task in list(self._background):
            task.cancel()


async def _connects(channel: aio.Channel, timeout: float) -> bool:
    """Whether ``channel`` connects within ``timeout`` seconds; False at once when it fails to."""

    async def ready() -> bool:
        state = channel.get_state(try_to_connect=True)
        while state is not grpc.ChannelConnectivity.READY:
            if state in (grpc.ChannelConnectivity.TRANSIENT_FAILURE, grpc.ChannelConnectivity.SHUTDOWN):
                return False
            await channel.wait_for_state_change(state)
            state = channel.get_state(try_to_connect=True)
        return True

    try:
        return await asyncio.wait_for(ready(), timeout)
    except TimeoutError:
        return False
