"""Reconnect rounds over the scheduler addresses, with backoff, until the worker closes its connection.

The stream is re-opened with exponential backoff (0.1 s doubling to 5 s, with jitter) until the worker
closes it; a refused registration ends the worker.

With several scheduler addresses, each reconnect is a round over all of them (names resolved anew),
the one that registered last first: an address that refuses, cannot be reached within
``CONNECT_TIMEOUT`` or does not register moves the round on at once, and only a round in which none
registered waits a backoff delay. A refused registration ends the worker when no address of the round
took it. A Redirect sends the worker on to the replica dispatching its group.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from grpc import aio

from sx.protos.v1 import scheduler_pb2
from sx.worker._addresses import SchedulerAddress
from sx.worker._registration import WorkerRejected

__all__ = [
    "BACKOFF_FIRST",
    "BACKOFF_MAX",
    "CONNECT_TIMEOUT",
    "UNREACHABLE_HINT_AFTER",
    "Reconnector",
    "backoff_delays",
]

log = logging.getLogger("sx.worker")

BACKOFF_FIRST = 0.1
BACKOFF_MAX = 5.0
CONNECT_TIMEOUT = 5.0
"""With several addresses, seconds one gets to accept a connection before the round moves on."""
UNREACHABLE_HINT_AFTER = 30.0
"""Seconds of failed rounds before the worker says what to check; it says it again at this interval
doubled each time. Repeated failures in between are logged at DEBUG only, so the log does not fill up."""

_MAX_HOPS = 3
"""Redirects followed within one round (a group moving twice meanwhile; never a loop)."""


def backoff_delays(first: float = BACKOFF_FIRST, cap: float = BACKOFF_MAX) -> Any:
    """Endless reconnect delays: ``first`` doubling up to ``cap``, each with ±20 % jitter."""
    delay = first
    while True:
        yield delay * random.uniform(0.8, 1.2)
        delay = min(delay * 2, cap)


def _loop_time() -> float:
    return asyncio.get_running_loop().time()


Session = Callable[[SchedulerAddress, aio.Channel], Awaitable[None]]
"""One stream to an address over a channel, from Register to its end; it calls ``Reconnector.adopt``
when it registered."""


class Reconnector:
    """Runs ``session`` against one of ``addresses`` (``host:port`` entries) after another, round after
    round with backoff, until ``closing``; keeps the channel of the address that registered last."""

    def __init__(
        self,
        *,
        addresses: list[str],
        credentials: grpc.ChannelCredentials | None,
        session: Session,
        connected: asyncio.Event,
        attempted: asyncio.Event,
    ) -> None:
        self._entries = list(addresses)
        self.server = ",".join(addresses)
        self.dialing = self.server
        """The address of the stream being set up or served, for log lines."""
        self._registered_at: SchedulerAddress | None = None
        self._credentials = credentials
        self._session = session
        self._connected = connected
        self._attempted = attempted
        self.closing = False
        """Set when the worker closes its connection: no round starts after."""
        self._closed = asyncio.Event()
        self._current: asyncio.Task[bool] | None = None
        """The round over the addresses under way, which ``stop`` cancels."""
        self.connects = 0
        """How many times the worker has registered (1 after the first connect)."""
        self.channel: aio.Channel | None = None
        """The channel to the scheduler the worker last registered with, while ``run`` runs (unary
        calls such as the task store's)."""
        self._failing_since: float | None = None
        """Loop time of the first of the failed rounds in a row, None while registered."""
        self._next_hop: SchedulerAddress | None = None
        """Where the last Redirect sent the worker (the replica dispatching its group): tried first."""
        self._retry_after: float | None = None
        """Seconds until the next round when a Redirect said no replica holds the group yet."""

    async def run(self) -> None:
        """Run rounds until ``stop``; raises ``WorkerRejected`` when registration is refused."""
        delays = backoff_delays()
        hint_at = UNREACHABLE_HINT_AFTER
        try:
            while not self.closing:
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
                    self._attempted.set()
                    if self._failing_since is None:
                        self._failing_since = _loop_time()
                    else:
                        level = logging.DEBUG
                        if _loop_time() - self._failing_since >= hint_at:
                            self._hint_unreachable()
                            hint_at *= 2
                if self.closing:
                    break
                delay = next(delays)
                if self._retry_after is not None:  # the group gets an owner within a moment
                    delay, self._retry_after = self._retry_after, None
                log.log(level, "reconnecting to scheduler %s in %.2fs", self.server, delay)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._closed.wait(), timeout=delay)
        finally:
            self._attempted.set()
            self._connected.clear()
            channel, self.channel, self._registered_at = self.channel, None, None
            if channel is not None:
                await channel.close()

    def stop(self) -> None:
        """End ``run``: no more waiting for the next round, and the round under way is cancelled."""
        self._closed.set()
        if self._current is not None:
            self._current.cancel()

    def _failure_level(self) -> int:
        """WARNING for the first failed round in a row, DEBUG for the repeats (see _hint_unreachable)."""
        return logging.DEBUG if self._failing_since is not None else logging.WARNING

    def _hint_unreachable(self) -> None:
        assert self._failing_since is not None
        log.warning(
            "no scheduler at %s has registered this worker for %.0fs; still retrying. Check the address, "
            "TLS settings and app key with: sx-worker check --server %s",
            self.server,
            _loop_time() - self._failing_since,
            self.server,
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
            if self.closing:
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
        if refused is not None and not self.closing:
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
        self.dialing = str(address)
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

    async def adopt(self, address: SchedulerAddress, channel: aio.Channel) -> None:
        """``channel`` to ``address`` just registered: ``connects`` counts it, and it becomes the
        worker's channel."""
        self.connects += 1
        previous, self.channel, self._registered_at = self.channel, channel, address
        if previous is not None and previous is not channel:
            await previous.close()

    def follow(self, redirect: scheduler_pb2.Redirect) -> None:
        """Another scheduler replica dispatches this worker's group: connect there next (or, when none
        does yet, try again after the delay it says)."""
        if redirect.address:
            self._next_hop = SchedulerAddress(redirect.address, redirect.address)
            log.info("scheduler %s: %s; connecting there", self.dialing, redirect.reason)
        else:
            self._next_hop = None
            self._retry_after = max(redirect.retry_after_ms, 100) / 1000
            log.info("scheduler %s: %s; asking again shortly", self.dialing, redirect.reason)


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
