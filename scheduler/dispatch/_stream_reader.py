"""Reading a registered worker's Connect stream: its reports and submit replies (applied to the store in
batches), heartbeats, log lines and deregistration."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

from sx.processors import InstanceStatus
from sx.protos.v1 import scheduler_pb2
from sx.scheduler._clock import Clock
from sx.scheduler.dispatch._log_writer import InstanceLogWriter
from sx.scheduler.dispatch._ownership import GroupOwnership
from sx.scheduler.dispatch._registry import WorkerSession
from sx.scheduler.dispatch._reports import InstanceReports
from sx.scheduler.dispatch._state import DispatchState, mark_draining
from sx.scheduler.store import FencedError

__all__ = ["WorkerStreamReader"]

log = logging.getLogger("sx.scheduler.dispatch")

_FINAL_STATUSES = frozenset({int(InstanceStatus.SUCCESS), int(InstanceStatus.FAILED)})
# Worker messages received but not yet applied, per stream; and applied together at most.
_INBOX_SIZE = 1024
_BATCH_LIMIT = 256


class WorkerStreamReader:
    """Applies what each worker sends on its stream, until the stream ends."""

    def __init__(
        self,
        *,
        clock: Clock,
        state: DispatchState,
        reports: InstanceReports,
        ownership: GroupOwnership,
        logs: InstanceLogWriter | None = None,
    ) -> None:
        self._clock = clock
        self._state = state
        self._reports = reports
        self._ownership = ownership
        self._logs = logs

    async def read_loop(
        self, session: WorkerSession, messages: AsyncIterator[scheduler_pb2.WorkerMessage]
    ) -> None:
        """Apply the worker's messages until its stream ends, then ask the stream to close. The messages
        that arrived while the previous ones were applied are applied together (`_apply`)."""
        close = ("", "")
        inbox: asyncio.Queue[scheduler_pb2.WorkerMessage | None] = asyncio.Queue(_INBOX_SIZE)
        receiver = asyncio.create_task(self._receive(messages, inbox), name="sx-worker-stream-receive")
        try:
            while True:
                first = await inbox.get()
                if first is None:
                    receiver.result()  # raises what broke the stream; None when the worker ended it
                    break
                batch = [first]
                while len(batch) < _BATCH_LIMIT and not inbox.empty():
                    message = inbox.get_nowait()
                    if message is None:
                        inbox.put_nowait(None)  # the end, seen after this batch
                        break
                    batch.append(message)
                if session.closed:
                    break
                session.last_seen = self._clock.now()
                await self._apply(session, batch)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the stream broke, or the store failed: the worker reconnects and re-sends
            if session.closed:
                return  # we ended it ourselves
            if isinstance(exc, FencedError):
                self._ownership.suspect()  # its report is not acknowledged: the worker re-sends it
            log.warning("stream of worker %s ended: %r", session.worker_id, exc)
            close = ("UNAVAILABLE", f"stream error: {exc}")
        finally:
            receiver.cancel()
            if receiver.done() and not receiver.cancelled():
                receiver.exception()  # retrieved: what broke the stream was logged above, or is moot
        if not session.closed:
            session.close(*close)

    @staticmethod
    async def _receive(
        messages: AsyncIterator[scheduler_pb2.WorkerMessage],
        inbox: asyncio.Queue[scheduler_pb2.WorkerMessage | None],
    ) -> None:
        """Move the stream's messages to ``inbox`` (bounded: a slow store slows the worker's stream
        down), then None when the stream ends or breaks (the task then holds what broke it)."""
        try:
            async for message in messages:
                if message.WhichOneof("body") == "batch":
                    for inner in message.batch.messages:
                        await inbox.put(inner)
                else:
                    await inbox.put(message)
        except asyncio.CancelledError:
            raise
        except Exception:
            await inbox.put(None)
            raise
        await inbox.put(None)

    async def _apply(self, session: WorkerSession, batch: list[scheduler_pb2.WorkerMessage]) -> None:
        """Apply messages in order; runs of reports and submit replies go to the store together."""
        pending: list[scheduler_pb2.InstanceReport | scheduler_pb2.SubmitReply] = []
        for message in batch:
            kind = message.WhichOneof("body")
            if kind == "report":
                pending.append(message.report)
                continue
            if kind == "submit_reply":
                pending.append(message.submit_reply)
                continue
            await self._apply_instance_messages(session, pending)
            pending = []
            if kind == "heartbeat":
                self._on_heartbeat(session, message.heartbeat)
            elif kind == "log_batch":
                if self._logs is not None:
                    key = session.key
                    self._logs.offer(key.namespace, key.group_id, key.worker_id, message.log_batch)
            elif kind == "deregister":
                log.info("worker %s deregistered: %s", session.worker_id, message.deregister.reason)
                session.accepting = False
            else:
                log.warning("worker %s sent an unexpected %s message; ignored", session.worker_id, kind)
        await self._apply_instance_messages(session, pending)

    async def _apply_instance_messages(
        self, session: WorkerSession, items: list[scheduler_pb2.InstanceReport | scheduler_pb2.SubmitReply]
    ) -> None:
        if not items:
            return
        if self._logs is not None and any(
            isinstance(item, scheduler_pb2.InstanceReport) and item.status in _FINAL_STATUSES
            for item in items
        ):
            # The worker sent the instances' lines first: stored before they read as ended, so a
            # reader that sees one ended sees them.
            await self._logs.flush()
        await self._reports.on_batch(session, items)

    def _on_heartbeat(self, session: WorkerSession, heartbeat: scheduler_pb2.Heartbeat) -> None:
        session.running = heartbeat.running
        if heartbeat.capacity > 0 and heartbeat.capacity != session.capacity:
            session.capacity = heartbeat.capacity
            self._state.dispatch_wake.set()
        session.cpu_load1 = heartbeat.cpu_load1
        session.rss_bytes = heartbeat.rss_bytes
        if heartbeat.draining:
            mark_draining(session)
