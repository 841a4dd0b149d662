"""How a map master takes ``ctx.map`` batches into its queue: as far as there is room, deepest first.

``ctx.map`` anywhere sends batches of up to 1000 payloads to the master (``MapTasks``; in process on the
master's worker). The master queues them in its task store, which holds at most ``queueSize`` queued
tasks: a batch is taken as far as there is room (``taken`` in the reply) and the mapper sends the rest
again. Nothing is dropped and the queue never grows past ``queueSize`` through maps (a failover puts a
lost worker's tasks back on top, and a resumed batch file starts with all its unfinished tasks queued;
maps then wait until it is below the bound again).

A mapper that has to wait gives its consumer slot back (``wait`` in the request) and the master counts
its task *parked*, outside the dispatch window, so nested maps cannot deadlock with every slot held by a
task waiting for room. Waiting maps are served deepest first (highest parent task id: children are
mapped after their parents), so the queue fills with work that finishes rather than with more mappers.

Parallel mode caps an instance at ``PARALLEL_TASK_CAP`` (300) mapped subtasks: a map past it fails the
instance. Grid logs a warning past ``GRID_SOFT_CAP`` subtasks (it keeps them all in memory).
"""

from __future__ import annotations

import asyncio
import bisect
import logging
from collections.abc import Callable
from dataclasses import dataclass

from sx.processors import ExecuteMode
from sx.protos.v1 import peer_pb2
from sx.worker.map._progress import MapProgress
from sx.worker.map._store import TaskStore

__all__ = ["GRID_SOFT_CAP", "MAP_WAIT", "PARALLEL_TASK_CAP", "MapAdmission", "MapCall"]

log = logging.getLogger("sx.worker")

PARALLEL_TASK_CAP = 300
"""Subtasks one parallel instance may map (the reference's limit)."""
GRID_SOFT_CAP = 50_000
"""Past this many subtasks a grid instance logs a warning suggesting batch mode (it does not fail)."""
MAP_WAIT = 1.0
"""Seconds a waiting map call is held for room in a full queue before the reply says overload."""


@dataclass(eq=False, slots=True)
class MapCall:
    """A map request the master holds until the queue has room for it."""

    request: peer_pb2.MapTasksRequest
    order: tuple[int, int]
    """Served in this order: deepest (highest parent task id) first, then first come."""
    done: asyncio.Future[None]
    taken: int = 0
    refused: str | None = None


class MapAdmission:
    """The door of one map master's queue (see the module doc).

    What it needs of the master: ``wake`` is set when tasks were queued; ``fail(why)`` fails the
    instance (a parallel map past the cap); ``park(request, parked)`` takes the mapping task out of (or
    back into) its worker's dispatch window; ``closed()`` and ``closed_reason()`` say whether (and why)
    the instance takes no more maps.
    """

    def __init__(
        self,
        *,
        store: TaskStore,
        progress: MapProgress,
        mode: ExecuteMode,
        queue_size: int,
        instance_id: int,
        wake: asyncio.Event,
        fail: Callable[[str], None],
        park: Callable[[peer_pb2.MapTasksRequest, bool], None],
        closed: Callable[[], bool],
        closed_reason: Callable[[], str],
    ) -> None:
        self._store = store
        self._progress = progress
        self._mode = mode
        self._queue_size = queue_size
        self._instance_id = instance_id
        self._wake = wake
        self._fail = fail
        self._park = park
        self._closed = closed
        self._closed_reason = closed_reason
        self._waiting: list[MapCall] = []
        self._arrivals = 0
        self._warned_size = False
        self.queue_peak = 0
        """The most tasks the queue held after a map (at most ``queue_size``)."""

    async def map_tasks(self, request: peer_pb2.MapTasksRequest) -> peer_pb2.MapTasksReply:
        """Queue what fits of one map request; a ``wait`` request is held up to ``MAP_WAIT`` for room."""
        count = len(request.payloads)
        if self._closed():
            return peer_pb2.MapTasksReply(accepted=False, message=self._closed_reason())
        if count == 0:
            return peer_pb2.MapTasksReply(accepted=False, message="the task list is empty")
        self._arrivals += 1
        call = MapCall(
            request=request,
            order=(-request.parent_task_id, self._arrivals),
            done=asyncio.get_running_loop().create_future(),
        )
        self._admit(call)
        if call.refused is None and call.taken < count and not self._closed():
            self._park(request, True)  # it waits, here or in its next call: out of the window
        if call.refused is None and call.taken < count and request.wait and not self._closed():
            bisect.insort(self._waiting, call, key=lambda c: c.order)
            try:
                await asyncio.wait({call.done}, timeout=MAP_WAIT)
            finally:
                if not call.done.done():
                    self._waiting.remove(call)
                    call.done.cancel()
        if call.refused is not None:
            return peer_pb2.MapTasksReply(accepted=False, message=call.refused, taken=call.taken)
        if call.taken < count:
            if self._closed():
                return peer_pb2.MapTasksReply(accepted=False, message=self._closed_reason(), taken=call.taken)
            return peer_pb2.MapTasksReply(
                accepted=True, overload=True, taken=call.taken, message="the queue is full"
            )
        self._park(request, False)
        return peer_pb2.MapTasksReply(accepted=True, taken=count)

    def _admit(self, call: MapCall) -> None:
        """Queue as much of ``call`` as there is room for; payloads queued before only count as taken."""
        request = call.request
        payloads = request.payloads
        count = len(payloads)
        store = self._store
        parent, seq = request.parent_task_id, request.batch_seq
        position = request.offset + call.taken  # index in the batch of the next payload not taken
        held = store.taken(parent, seq)
        if position > held:
            # The mapper only sends on from what the master took, so this is a defect, not a race.
            call.refused = f"map batch {seq} of task {parent} skips payloads {held}..{position - 1}"
            return
        call.taken = min(count, call.taken + held - position)
        fresh = count - call.taken
        if fresh == 0:
            return
        progress = self._progress
        if self._mode is ExecuteMode.PARALLEL and progress.total - 1 + fresh > PARALLEL_TASK_CAP:
            why = (
                f"mode parallel maps at most {PARALLEL_TASK_CAP} subtasks per instance; "
                f"this map would make {progress.total - 1 + fresh}: use grid or batch"
            )
            call.refused = why
            self._fail(why)
            return
        room = self._queue_size - store.pending
        if room <= 0:
            return
        n = min(fresh, room)
        store.add(request.task_name, list(payloads[call.taken : call.taken + n]), parent_id=parent, seq=seq)
        call.taken += n
        self.queue_peak = max(self.queue_peak, store.pending)
        progress.mapped(request.task_name, n)
        self._wake.set()
        if self._mode is ExecuteMode.GRID and not self._warned_size and progress.total > GRID_SOFT_CAP:
            self._warned_size = True
            log.warning(
                "instance %s: grid mode holds %d subtasks in memory (guidance: up to %d); "
                "use batch mode for more",
                self._instance_id,
                progress.total,
                GRID_SOFT_CAP,
            )

    def grant(self) -> None:
        """Room was made in the queue: the waiting map calls get it in their order."""
        waiting = self._waiting
        while waiting and not self._closed() and self._store.pending < self._queue_size:
            call = waiting[0]
            self._admit(call)
            if call.refused is None and call.taken < len(call.request.payloads):
                return
            if waiting and waiting[0] is call:
                waiting.pop(0)
            if not call.done.done():
                call.done.set_result(None)

    def release_waiting(self) -> None:
        """The instance is closing: every waiting map call is answered."""
        waiting, self._waiting = self._waiting, []
        for call in waiting:
            if not call.done.done():
                call.done.set_result(None)
