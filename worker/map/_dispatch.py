"""How a map master sends its queued tasks to the instance's workers, and takes them back from lost ones.

- The root task (``MAP_TASK_ROOT``, id 0) always runs on the master's own worker.
- ``dispatcherSize`` dispatchers send pages of up to ``pageSize`` tasks (``StartTasks``) round robin
  to the live workers of the instance, itself included. A worker is sent more only while it has fewer
  unparked tasks in flight than its *window*, so queues on the workers stay small: ``2 × pageSize +
  consumerSize`` on the master's own worker, ``REMOTE_EXTRA_PAGES`` pages more on the others. The
  master's process also dispatches, reads statuses and serves the maps, so its consumers run fewer
  tasks than a worker that only runs tasks; the deeper window keeps the others busy while their
  statuses and next pages wait for the master's loop (with equal windows the master ran about 72 % of
  no-op subtasks; with four pages more about half, and the other worker waited on the master part of
  the time; with twelve the other runs about 58 % and both processes are busy).
- Failover: every ``alive_interval`` seconds the master asks its workers ``CheckAlive`` for the
  instance; a worker that does not answer (or whose ``StartTasks`` fails) is dropped and its unfinished
  tasks go back to the queue for the others. A worker that answers but no longer knows the instance
  (restarted on the same address) keeps its place, and its unfinished tasks are queued again. **A
  subtask can therefore run twice**: make subtasks idempotent. Its map batches are taken once (see
  ``batch_seq``), so its own subtasks are not duplicated.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

from sx.protos.v1 import common_pb2, peer_pb2
from sx.worker._metrics import WorkerMetrics
from sx.worker._outcome import error_text
from sx.worker._peer import PeerClients
from sx.worker.map._progress import MapProgress
from sx.worker.map._server_store import ServerTaskStore
from sx.worker.map._store import ROOT_TASK_ID, TaskRecord, TaskStore

__all__ = ["Flight", "Target", "TaskDispatch"]

log = logging.getLogger("sx.worker")

REMOTE_EXTRA_PAGES = 12
"""Pages in flight to a worker other than the master's own beyond the master's window: what keeps it
busy while its statuses and its next pages wait for the master's loop (bench_map, grid)."""


@dataclass(eq=False, slots=True)
class Flight:
    """A task sent to a worker and not finished yet."""

    record: TaskRecord
    address: str
    running: bool = False
    parked: bool = False
    """Waiting in ``ctx.map`` for room in the queue: it does not count in its worker's window."""
    incarnation: str = ""
    """The worker process that accepted it (empty while StartTasks travels)."""


@dataclass(eq=False)
class Target:
    """A worker the instance's tasks run on."""

    worker_id: str
    address: str
    inflight: int = 0
    """Tasks sent and not finished, parked ones left out."""
    alive: bool = True
    why_lost: str = ""
    starts: int = 0
    """StartTasks calls begun; a liveness answer given while one travelled proves nothing."""
    starting: int = 0


class TaskDispatch:
    """The tasks one map master has in flight, the workers they run on, and the loops that send them.

    ``inflight`` (by task id), ``targets`` (by address) and ``order`` (round robin) are the master's to
    read: it lands finished tasks in them. What it needs of the master: ``wake`` is set when there is
    work to send and waited on when there is none; ``closed()`` ends the loops; ``room()`` is called
    after a page left the queue (waiting maps may now be taken), ``check_done()`` after a page was
    sent, and ``fail(why)`` when the instance cannot go on (no worker left, the root lost).
    """

    def __init__(
        self,
        *,
        spec: common_pb2.InstanceSpec,
        peers: PeerClients,
        worker_id: str,
        address: str,
        store: TaskStore,
        progress: MapProgress,
        page_size: int,
        window: int,
        alive_interval: float,
        wake: asyncio.Event,
        closed: Callable[[], bool],
        room: Callable[[], None],
        check_done: Callable[[], None],
        fail: Callable[[str], None],
        metrics: WorkerMetrics | None = None,
    ) -> None:
        self.spec = spec
        self.metrics = metrics
        self.peers = peers
        self.worker_id = worker_id
        self.address = address
        self.store = store
        self.progress = progress
        self.page_size = page_size
        self.window = window
        """The window of the master's own worker."""
        self.remote_window = window + REMOTE_EXTRA_PAGES * page_size
        """The window of every other worker."""
        self.alive_interval = alive_interval
        self._wake = wake
        self._closed = closed
        self._room = room
        self._check_done = check_done
        self._fail = fail
        self.targets: dict[str, Target] = {}
        self.order: list[Target] = []
        self.inflight: dict[int, Flight] = {}
        self.sending = 0
        """StartTasks calls on their way."""
        self._next = 0
        self._background: set[asyncio.Task[None]] = set()

    def enlist_workers(self) -> None:
        """The instance's workers as the scheduler listed them, the master's own worker first if missing."""
        refs = list(self.spec.workers)
        if not any(ref.address == self.address for ref in refs):
            refs.insert(0, common_pb2.WorkerRef(worker_id=self.worker_id, address=self.address))
        for ref in refs:
            if ref.address and ref.address not in self.targets:
                target = Target(worker_id=ref.worker_id, address=ref.address)
                self.targets[ref.address] = target
                self.order.append(target)

    @property
    def idle(self) -> bool:
        """Nothing in flight and no StartTasks on its way."""
        return not self.inflight and self.sending == 0

    def park(self, request: peer_pb2.MapTasksRequest, parked: bool) -> None:
        """The mapping task waits for room (or got it): it leaves (or rejoins) its worker's window."""
        flight = self.inflight.get(request.parent_task_id)
        if flight is None or flight.parked is parked:
            return
        target = self.targets.get(flight.address)
        if target is None or target.worker_id != request.worker_id:
            return  # an earlier run of a task sent elsewhere since: not the one in flight
        flight.parked = parked
        target.inflight += -1 if parked else 1
        if parked:
            self._wake.set()

    # -- dispatch ------------------------------------------------------------------------------------

    async def dispatch_loop(self) -> None:
        while not self._closed():
            page = self._take_page()
            if page is None:
                self._wake.clear()
                page = self._take_page()
                if page is None:
                    await self._wake.wait()
                    continue
            target, records = page
            await self._send(target, records)

    def _take_page(self) -> tuple[Target, list[TaskRecord]] | None:
        """The next worker with room and a page of queued tasks for it, or None."""
        store = self.store
        if store.pending <= 0 or self._closed():
            return None
        order = self.order
        count = len(order)
        for step in range(count):
            target = order[(self._next + step) % count]
            window = self.window if target.address == self.address else self.remote_window
            room = window - target.inflight
            if not target.alive or room <= 0:
                continue
            self._next = (self._next + step + 1) % count
            # A short queue is spread over the workers rather than sent whole to the first one.
            alive = sum(1 for t in order if t.alive)
            share = -(-store.pending // alive)
            records = store.take(min(self.page_size, room, share))
            if not records:
                return None
            self._room()
            if records[0].task_id == ROOT_TASK_ID and target.address != self.address:
                # The root always runs on the master's own worker.
                root, records = records[0], records[1:]
                own = self.targets[self.address]
                self._register(own, [root])
                sender = asyncio.create_task(self._send(own, [root], registered=True))
                self._background.add(sender)
                sender.add_done_callback(self._background.discard)
                if not records:
                    return None
            return target, records
        return None

    def _register(self, target: Target, records: list[TaskRecord]) -> None:
        inflight = self.inflight
        address = target.address
        for record in records:
            inflight[record.task_id] = Flight(record, address)
        target.inflight += len(records)
        if isinstance(self.store, ServerTaskStore):
            self.store.assigned(records, worker_id=target.worker_id, address=address)
        names: dict[str, int] = {}
        for record in records:
            names[record.name] = names.get(record.name, 0) + 1
        for name, n in names.items():
            self.progress.sent(name, address, target.worker_id, n)
        self.progress.page(len(records))
        if self.metrics is not None:
            self.metrics.subtasks_sent(len(records))

    async def _send(self, target: Target, records: list[TaskRecord], *, registered: bool = False) -> None:
        if not registered:
            self._register(target, records)
        request = peer_pb2.StartTasksRequest(
            instance=self.spec,
            master_address=self.address,
            master_worker_id=self.worker_id,
            tasks=[
                peer_pb2.TaskRequest(task_id=r.task_id, task_name=r.name, payload=r.payload) for r in records
            ],
        )
        self.sending += 1
        target.starts += 1
        target.starting += 1
        try:
            reply = await self.peers.client(target.address).StartTasks(request)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._lose(target, f"could not start tasks: {error_text(exc)}")
            return
        finally:
            self.sending -= 1
            target.starting -= 1
        if not reply.accepted:
            self._lose(target, f"refused tasks: {reply.message}")
        else:
            inflight = self.inflight
            for record in records:
                flight = inflight.get(record.task_id)
                if flight is not None and flight.address == target.address:
                    flight.incarnation = reply.incarnation
        self._check_done()

    # -- failover ------------------------------------------------------------------------------------

    def _lose(self, target: Target, why: str) -> None:
        """Drop a worker: its unfinished tasks go back to the queue for the others."""
        if not target.alive:
            return
        target.alive = False
        target.why_lost = why
        mine = [f for f in self.inflight.values() if f.address == target.address]
        self._take_back(target, mine)
        if self._closed():
            return
        log.warning(
            "instance %s: worker %s (%s) dropped (%s); %d unfinished task(s) go to the others",
            self.spec.instance_id,
            target.worker_id,
            target.address,
            why,
            len(mine),
        )
        root = [f.record for f in mine if f.record.task_id == ROOT_TASK_ID]
        if root and target.address == self.address:
            self._fail(f"the root task could not run on the master: {why}")
            return
        self.store.requeue(f.record for f in mine)
        if not any(t.alive for t in self.order):
            reasons = "; ".join(f"{t.worker_id} ({t.address}): {t.why_lost}" for t in self.order)
            self._fail(f"no worker left to run the tasks: {reasons}")
            return
        self._wake.set()

    def _take_back(self, target: Target, flights: list[Flight]) -> None:
        """These unfinished tasks leave the worker (and its counters); the caller queues them again."""
        inflight = self.inflight
        for flight in flights:
            del inflight[flight.record.task_id]
            self.progress.taken_back(flight.record.name, target.address, was_running=flight.running)
            if not flight.parked:
                target.inflight -= 1

    async def alive_loop(self) -> None:
        while not self._closed():
            await asyncio.sleep(self.alive_interval)
            others = [t for t in self.order if t.alive and t.address != self.address]
            await asyncio.gather(*(self._check_alive(t) for t in others))

    async def _check_alive(self, target: Target) -> None:
        """Ask about the instance, not just the process: a worker restarted on the same address is up
        but lost its tasks. Its unfinished tasks are sent again; it stays a worker of the instance."""
        starts = target.starts
        request = peer_pb2.CheckAliveRequest(instance_id=self.spec.instance_id)
        try:
            reply = await self.peers.client(target.address).CheckAlive(request)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._lose(target, f"not reachable: {error_text(exc)}")
            return
        if not target.alive or self._closed():
            return
        mine = [f for f in self.inflight.values() if f.address == target.address]
        lost = [f for f in mine if f.incarnation and f.incarnation != reply.incarnation]
        why = "it is another process now (restarted)"
        if not lost and not reply.alive and not target.starting and target.starts == starts:
            # Tasks that travelled while it answered may be what it did not know yet, hence the guard.
            lost, why = mine, "it no longer knows the instance"
        if not lost:
            return
        log.warning(
            "instance %s: worker %s (%s): %s; its %d unfinished task(s) are sent again",
            self.spec.instance_id,
            reply.worker_id or target.worker_id,
            target.address,
            why,
            len(lost),
        )
        if reply.worker_id:
            target.worker_id = reply.worker_id
        self._take_back(target, lost)
        self.store.requeue(f.record for f in lost)
        self._wake.set()
