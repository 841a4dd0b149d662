"""The master of a map instance (modes parallel, grid and batch): queue, dispatch, statuses, reduce.

The worker an instance is submitted to runs its ``MapMaster``:

- The root task (``MAP_TASK_ROOT``, id 0) always runs on the master's own worker.
- ``ctx.map`` anywhere sends batches of up to 1000 payloads to the master (``MapTasks``; in process on
  the master's worker). The master queues them in its task store, which holds at most ``queueSize``
  queued tasks: a batch is taken as far as there is room (``taken`` in the reply) and the mapper sends
  the rest again. Nothing is dropped and the queue never grows past ``queueSize`` through maps (a
  failover puts a lost worker's tasks back on top, and a resumed batch file starts with all its
  unfinished tasks queued; maps then wait until it is below the bound again).
- A mapper that has to wait gives its consumer slot back (``wait`` in the request) and the master
  counts its task *parked*, outside the dispatch window, so nested maps cannot deadlock with every
  slot held by a task waiting for room. Waiting maps are served deepest first (highest parent task
  id: children are mapped after their parents), so the queue fills with work that finishes rather
  than with more mappers.
- ``dispatcherSize`` dispatchers send pages of up to ``pageSize`` tasks (``StartTasks``) round robin
  to the live workers of the instance, itself included. A worker is sent more only while it has fewer
  than ``2 × pageSize + consumerSize`` unparked tasks in flight, so queues on the workers stay small.
- Workers run at most ``consumerSize`` tasks of the instance at once, retry failed subtasks
  (``taskMaxAttempt``, ``taskAttemptInterval``; never the root) and report statuses in batches. The
  master de-duplicates them per task id: the first finished status wins.
- Every ``progress_interval`` seconds the master reports RUNNING with the progress JSON.
- When every task finished (nothing queued or in flight), ``reduce`` runs once on the master for a
  ``MapReduceProcessor`` (only when no task failed, unless ``reduce_on_failure``), the instance
  result is decided, and every worker is told ``DestroyInstance``.
- Failover: every ``alive_interval`` seconds the master asks its workers ``CheckAlive`` for the
  instance; a worker that does not answer (or whose ``StartTasks`` fails) is dropped and its unfinished
  tasks go back to the queue for the others. A worker that answers but no longer knows the instance
  (restarted on the same address) keeps its place, and its unfinished tasks are queued again. **A
  subtask can therefore run twice**: make subtasks idempotent. Its map batches are taken once (see
  ``batch_seq``), so its own subtasks are not duplicated.

Sizes: grid keeps every queued task, and for reduce every result, in the master's memory. It is
meant for up to about 50,000 subtasks (a warning is logged past that) and still works at a few hundred
thousand when memory allows; batch keeps them in a SQLite file under the worker's ``data_dir`` (tested
with 1,000,000 at flat memory; reduce then reads every result into memory once, at the end). Parallel
mode caps an instance at ``PARALLEL_TASK_CAP`` (300) mapped subtasks: a map past it fails the instance.

Parallel (``ServerTaskStore``): every subtask is also kept by the scheduler, written in batches, so it
can be listed and retried one by one through the OpenAPI. Before finishing, the master flushes and asks
the scheduler for the instance's task state; tasks reset there (``retryTasks``) run again, and reduce
then sees every task once. When the master dies the scheduler fails the instance and retries it
(maxAttempt); the retry's master takes over the stored tasks and does **not** run the SUCCESS ones again.

Resume (batch): the task file outlives a killed master, and a master whose worker shuts down
(``suspend``) keeps it too. When the scheduler sees the master's worker gone it submits the instance
again; a master on the same host (same ``data_dir``) finds the file and resumes: finished tasks stay
finished and the others are sent again. Resume needs the same disk.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from sx.processors._context import JobContext
from sx.processors._enums import REDUCE_TASK_NAME, ROOT_TASK_NAME, ExecuteMode, InstanceStatus, TaskStatus
from sx.processors._result import ProcessResult, shorten_head
from sx.protos.v1 import common_pb2, peer_pb2
from sx.worker._broadcast import Outcome, _error_text
from sx.worker._convert import TaskInfo, context_for, execute_mode_of
from sx.worker._peer import PeerClients
from sx.worker._runner import HookRunner, Resolved
from sx.worker.map._progress import MapProgress
from sx.worker.map._server_store import ServerTaskStore
from sx.worker.map._store import ROOT_TASK_ID, TaskRecord, TaskStore

__all__ = ["GRID_SOFT_CAP", "PARALLEL_TASK_CAP", "MapMaster"]

log = logging.getLogger("sx.worker")

PARALLEL_TASK_CAP = 300
"""Subtasks one parallel instance may map (the reference's limit)."""
GRID_SOFT_CAP = 50_000
"""Past this many subtasks a grid instance logs a warning suggesting batch mode (it does not fail)."""
MAP_WAIT = 1.0
"""Seconds a waiting map call is held for room in a full queue before the reply says overload."""
DEFAULT_PAGE_SIZE = 100
DEFAULT_QUEUE_SIZE = 10_000
DEFAULT_CONSUMER_SIZE = 5
DEFAULT_DISPATCHER_SIZE = 5
MAX_DISPATCHER_SIZE = 200


@dataclass(eq=False, slots=True)
class _Flight:
    """A task sent to a worker and not finished yet."""

    record: TaskRecord
    address: str
    running: bool = False
    parked: bool = False
    """Waiting in ``ctx.map`` for room in the queue: it does not count in its worker's window."""
    incarnation: str = ""
    """The worker process that accepted it (empty while StartTasks travels)."""


@dataclass(eq=False, slots=True)
class _MapCall:
    """A map request the master holds until the queue has room for it."""

    request: peer_pb2.MapTasksRequest
    order: tuple[int, int]
    """Served in this order: deepest (highest parent task id) first, then first come."""
    done: asyncio.Future[None]
    taken: int = 0
    refused: str | None = None


@dataclass(eq=False)
class _Target:
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


@dataclass(eq=False)
class MapMaster:
    """Runs one map instance from the worker it was submitted to.

    ``store`` holds its tasks (``MemoryTaskStore`` for grid and parallel, ``FileTaskStore`` for batch);
    ``report_progress(json)`` sends a RUNNING report carrying the progress. Statuses arrive through
    ``on_statuses`` and map batches through ``map_tasks`` (the Peer service routes them by instance id).
    """

    spec: common_pb2.InstanceSpec
    resolved: Resolved
    hooks: HookRunner
    peers: PeerClients
    worker_id: str
    address: str
    store: TaskStore
    report_progress: Callable[[str], None] = lambda _progress: None
    alive_interval: float = 3.0
    progress_interval: float = 3.0
    progress: MapProgress = field(default_factory=MapProgress)
    _targets: dict[str, _Target] = field(default_factory=dict)
    _order: list[_Target] = field(default_factory=list)
    _next: int = 0
    _inflight: dict[int, _Flight] = field(default_factory=dict)
    _wake: asyncio.Event = field(default_factory=asyncio.Event)
    _done: asyncio.Event = field(default_factory=asyncio.Event)
    _waiting: list[_MapCall] = field(default_factory=list)
    _arrivals: int = 0
    _sending: int = 0
    _closed: bool = False
    _suspended: bool = False
    _killed: str | None = None
    _fatal: str | None = None
    _root_failure: str | None = None
    _first_failure: str | None = None
    _hook_ctx: JobContext | None = None
    _warned_size: bool = False
    _background: set[asyncio.Task[None]] = field(default_factory=set)
    queue_peak: int = 0
    """The most tasks the queue held after a map (at most ``queue_size``)."""

    def __post_init__(self) -> None:
        options = self.spec.map_options
        self.page_size = options.page_size if options.page_size > 0 else DEFAULT_PAGE_SIZE
        self.queue_size = options.queue_size if options.queue_size > 0 else DEFAULT_QUEUE_SIZE
        self.consumer_size = options.consumer_size if options.consumer_size > 0 else DEFAULT_CONSUMER_SIZE
        dispatchers = options.dispatcher_size if options.dispatcher_size > 0 else DEFAULT_DISPATCHER_SIZE
        self.dispatcher_size = min(dispatchers, MAX_DISPATCHER_SIZE)
        self.window = 2 * self.page_size + self.consumer_size
        self.mode = execute_mode_of(self.spec)

    # -- the Peer service's entry points -------------------------------------------------------------

    async def map_tasks(self, request: peer_pb2.MapTasksRequest) -> peer_pb2.MapTasksReply:
        """Queue what fits of one map request; a ``wait`` request is held up to ``MAP_WAIT`` for room."""
        count = len(request.payloads)
        if self._closed:
            return peer_pb2.MapTasksReply(accepted=False, message=self._closed_reason())
        if count == 0:
            return peer_pb2.MapTasksReply(accepted=False, message="the task list is empty")
        self._arrivals += 1
        call = _MapCall(
            request=request,
            order=(-request.parent_task_id, self._arrivals),
            done=asyncio.get_running_loop().create_future(),
        )
        self._admit(call)
        if call.refused is None and call.taken < count and not self._closed:
            self._park(request, parked=True)  # it waits, here or in its next call: out of the window
        if call.refused is None and call.taken < count and request.wait and not self._closed:
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
            if self._closed:
                return peer_pb2.MapTasksReply(accepted=False, message=self._closed_reason(), taken=call.taken)
            return peer_pb2.MapTasksReply(
                accepted=True, overload=True, taken=call.taken, message="the queue is full"
            )
        self._park(request, parked=False)
        return peer_pb2.MapTasksReply(accepted=True, taken=count)

    def _admit(self, call: _MapCall) -> None:
        """Queue as much of ``call`` as there is room for; payloads queued before only count as taken."""
        request = call.request
        payloads = request.payloads
        count = len(payloads)
        store = self.store
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
        if self.mode is ExecuteMode.PARALLEL and self.progress.total - 1 + fresh > PARALLEL_TASK_CAP:
            why = (
                f"mode parallel maps at most {PARALLEL_TASK_CAP} subtasks per instance; "
                f"this map would make {self.progress.total - 1 + fresh}: use grid or batch"
            )
            call.refused = why
            self._fail(why)
            return
        room = self.queue_size - store.pending
        if room <= 0:
            return
        n = min(fresh, room)
        store.add(request.task_name, list(payloads[call.taken : call.taken + n]), parent_id=parent, seq=seq)
        call.taken += n
        self.queue_peak = max(self.queue_peak, store.pending)
        self.progress.mapped(request.task_name, n)
        self._wake.set()
        if self.mode is ExecuteMode.GRID and not self._warned_size and self.progress.total > GRID_SOFT_CAP:
            self._warned_size = True
            log.warning(
                "instance %s: grid mode holds %d subtasks in memory (guidance: up to %d); "
                "use batch mode for more",
                self.spec.instance_id,
                self.progress.total,
                GRID_SOFT_CAP,
            )

    def _grant(self) -> None:
        """Room was made in the queue: the waiting map calls get it in their order."""
        waiting = self._waiting
        while waiting and not self._closed and self.store.pending < self.queue_size:
            call = waiting[0]
            self._admit(call)
            if call.refused is None and call.taken < len(call.request.payloads):
                return
            if waiting and waiting[0] is call:
                waiting.pop(0)
            if not call.done.done():
                call.done.set_result(None)

    def _release_waiting(self) -> None:
        """The instance is closing: every waiting map call is answered."""
        waiting, self._waiting = self._waiting, []
        for call in waiting:
            if not call.done.done():
                call.done.set_result(None)

    def _park(self, request: peer_pb2.MapTasksRequest, *, parked: bool) -> None:
        """The mapping task waits for room (or got it): it leaves (or rejoins) its worker's window."""
        flight = self._inflight.get(request.parent_task_id)
        if flight is None or flight.parked is parked:
            return
        target = self._targets.get(flight.address)
        if target is None or target.worker_id != request.worker_id:
            return  # an earlier run of a task sent elsewhere since: not the one in flight
        flight.parked = parked
        target.inflight += -1 if parked else 1
        if parked:
            self._wake.set()

    def on_statuses(self, batch: peer_pb2.TaskStatusBatch) -> None:
        """Apply a batch of task statuses; the first finished status of a task wins."""
        if self._suspended:
            return
        inflight = self._inflight
        progress = self.progress
        server = self.store if isinstance(self.store, ServerTaskStore) else None
        done: list[tuple[int, TaskStatus, str]] = []
        # Counters move once per (name, worker, outcome) of the batch, not once per task.
        moves: dict[tuple[str, str, bool, bool], int] = {}
        freed: dict[str, int] = {}
        for update in batch.updates:
            task_id = update.task_id
            flight = inflight.get(task_id)
            if flight is None:
                continue  # finished already, or taken back from a lost worker
            status = update.status
            if status == 3:
                if not flight.running:
                    flight.running = True
                    progress.started(flight.record.name, flight.address)
                    if server is not None:
                        server.started(task_id, address=flight.address)
                continue
            if status == 4:
                ok = True
                done.append((task_id, TaskStatus.SUCCESS, update.result))
            elif status == 5:
                ok = False
                result = update.result
                done.append((task_id, TaskStatus.FAILED, result))
                if task_id == ROOT_TASK_ID:
                    self._root_failure = result or "failed"
                elif self._first_failure is None:
                    self._first_failure = f"task {task_id} ({flight.record.name}): {result}"
            else:
                continue
            del inflight[task_id]
            key = (flight.record.name, flight.address, ok, flight.running)
            moves[key] = moves.get(key, 0) + 1
            if not flight.parked:
                freed[flight.address] = freed.get(flight.address, 0) + 1
        if done:
            targets = self._targets
            for address, count in freed.items():
                target = targets.get(address)
                if target is not None:
                    target.inflight -= count
            for (name, address, ok, was_running), count in moves.items():
                progress.finished(name, address, ok=ok, was_running=was_running, count=count)
            self.store.finish(done)
            self._wake.set()
            self._check_done()

    async def suspend(self, reason: str) -> None:
        """Stop here but keep the task file (batch; the caller cancels ``run``): the scheduler submits
        the instance again and its next master resumes from the file. Statuses are no longer
        recorded, so the tasks stopped now count as unfinished there."""
        self._suspended = True
        await self.kill(reason)

    async def kill(self, reason: str) -> None:
        """Stop the instance's tasks on every worker (the caller cancels ``run``)."""
        self._killed = reason
        self._closed = True
        self._release_waiting()
        self._wake.set()
        if self._hook_ctx is not None:
            self._hook_ctx.cancel()
        request = peer_pb2.PeerKillRequest(instance_id=self.spec.instance_id, reason=reason)
        await asyncio.gather(*(self._call_quietly(t.address, "KillInstance", request) for t in self._order))

    # -- running -------------------------------------------------------------------------------------

    async def run(self) -> Outcome:
        """Run the instance to its outcome; cancelled when the instance is killed."""
        spec = self.spec
        refs = list(spec.workers)
        if not any(ref.address == self.address for ref in refs):
            refs.insert(0, common_pb2.WorkerRef(worker_id=self.worker_id, address=self.address))
        for ref in refs:
            if ref.address and ref.address not in self._targets:
                target = _Target(worker_id=ref.worker_id, address=ref.address)
                self._targets[ref.address] = target
                self._order.append(target)
        server = self.store if isinstance(self.store, ServerTaskStore) else None
        if server is not None:
            server.on_fatal = self._fail
            await server.open()
        if self.store.resumed:
            for name, (total, success, failed) in self.store.restored_counts().items():
                self.progress.restore(name, total=total, success=success, failed=failed)
            log.info(
                "instance %s resumed from its task file: %d of %d task(s) finished",
                spec.instance_id,
                self.progress.success + self.progress.failed,
                self.progress.total,
            )
        else:
            self.progress.mapped(ROOT_TASK_NAME, 1)
        self.store.add_root()
        loops = [
            asyncio.create_task(self._dispatch_loop(), name=f"sx-map-dispatch-{spec.instance_id}-{i}")
            for i in range(self.dispatcher_size)
        ]
        loops.append(asyncio.create_task(self._alive_loop(), name=f"sx-map-alive-{spec.instance_id}"))
        loops.append(asyncio.create_task(self._progress_loop(), name=f"sx-map-progress-{spec.instance_id}"))
        try:
            self._check_done()
            await self._done.wait()
            while server is not None and await self._retried_at_end(server):
                await self._done.wait()
            self._closed = True
            self._release_waiting()
            for loop in loops:
                loop.cancel()
            await asyncio.gather(*loops, return_exceptions=True)
            return await self._finish()
        finally:
            self._closed = True
            self._release_waiting()
            for loop in loops:
                loop.cancel()
            await asyncio.gather(*loops, return_exceptions=True)
            await self._destroy_everywhere()
            self._inflight.clear()
            if server is not None:
                with contextlib.suppress(Exception):
                    await server.aclose()
            # A suspended batch instance keeps its file: the master that takes it over resumes from it.
            self.store.close(remove=not self._suspended)

    def _closed_reason(self) -> str:
        if self._killed is not None:
            return f"instance {self.spec.instance_id} was killed: {self._killed}"
        return f"instance {self.spec.instance_id} has finished on its master"

    async def _retried_at_end(self, server: ServerTaskStore) -> bool:
        """Ask the scheduler for the task state: True when tasks were reset there and run again."""
        if self._fatal is not None or self._killed is not None:
            return False
        try:
            counts, again = await server.completion()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._fail(f"the scheduler's task state could not be read: {_error_text(exc)}")
            return False
        if again:
            self._retry(again)
            return True
        if self._fatal is None:
            stored = sum(counts.values())
            finished = counts.get(TaskStatus.SUCCESS, 0) + counts.get(TaskStatus.FAILED, 0)
            if stored != self.progress.total or finished != stored:
                self._fail(
                    f"task count is wrong: the scheduler has {finished} finished of {stored} stored task(s), "
                    f"the master {self.progress.success + self.progress.failed} of {self.progress.total}"
                )
        return False

    def _retry(self, again: list[tuple[TaskRecord, TaskStatus]]) -> None:
        """Tasks reset through the OpenAPI are queued again: they leave the finished counters."""
        for record, old in again:
            counter = self.progress._task(record.name)
            if old is TaskStatus.SUCCESS:
                counter.success -= 1
            else:
                counter.failed -= 1
            if record.task_id == ROOT_TASK_ID:
                self._root_failure = None
        if self.progress.failed == 0:
            self._first_failure = None
        self._done.clear()
        self._wake.set()

    def _fail(self, why: str) -> None:
        if self._fatal is None:
            self._fatal = shorten_head(why)
        self._closed = True
        self._release_waiting()
        self._done.set()

    def _check_done(self) -> None:
        if self.store.pending == 0 and not self._inflight and self._sending == 0:
            self._done.set()

    async def _finish(self) -> Outcome:
        progress = self.progress
        if self._fatal is not None:
            return Outcome(InstanceStatus.FAILED, self._fatal, progress.to_json())
        finished = progress.success + progress.failed
        if finished != progress.total:
            text = f"task count is wrong: {finished} finished of {progress.total} mapped"
            return Outcome(InstanceStatus.FAILED, text, progress.to_json())
        failure = self._failure_text()
        reduced: ProcessResult | None = None
        if self.resolved.has_hook("reduce") and (failure is None or self._reduce_on_failure()):
            reduced = await self._reduce()
        text = ""
        if failure is not None:
            text = failure
            if reduced is not None and not reduced.ok:
                text = f"{failure}; reduce failed: {reduced.result}"
            return Outcome(InstanceStatus.FAILED, shorten_head(text), progress.to_json())
        if reduced is not None and not reduced.ok:
            return Outcome(
                InstanceStatus.FAILED, shorten_head(f"reduce failed: {reduced.result}"), progress.to_json()
            )
        if reduced is not None and reduced.result:
            return Outcome(InstanceStatus.SUCCESS, reduced.result, progress.to_json())
        return Outcome(InstanceStatus.SUCCESS, f"{progress.total} task(s) succeeded", progress.to_json())

    def _failure_text(self) -> str | None:
        if self._root_failure is not None:
            return f"root task failed: {self._root_failure}"
        failed = self.progress.failed
        if failed:
            return f"{failed} of {self.progress.total} task(s) failed; first: {self._first_failure or '?'}"
        return None

    def _reduce_on_failure(self) -> bool:
        definition = self.resolved.definition
        return bool(definition is not None and definition.reduce_on_failure)

    async def _reduce(self) -> ProcessResult:
        counter = self.progress._task(REDUCE_TASK_NAME)
        counter.total += 1
        counter.running += 1
        results, statuses = self.store.results()
        ctx = context_for(
            self.spec,
            worker_addr=self.address,
            task=TaskInfo(task_name=REDUCE_TASK_NAME),
            codec=self.resolved.codec,
            loop=asyncio.get_running_loop(),
        )
        # Handed over as they are (no copy): a million results should exist once in memory.
        ctx.task_results = results
        ctx.task_statuses = statuses
        self._hook_ctx = ctx
        try:
            outcome = await self.hooks.call(self.resolved, "reduce", ctx)
        finally:
            self._hook_ctx = None
        counter.running -= 1
        if outcome.ok:
            counter.success += 1
        else:
            counter.failed += 1
        return outcome

    # -- dispatch ------------------------------------------------------------------------------------

    async def _dispatch_loop(self) -> None:
        while not self._closed:
            page = self._take_page()
            if page is None:
                self._wake.clear()
                page = self._take_page()
                if page is None:
                    await self._wake.wait()
                    continue
            target, records = page
            await self._send(target, records)

    def _take_page(self) -> tuple[_Target, list[TaskRecord]] | None:
        """The next worker with room and a page of queued tasks for it, or None."""
        store = self.store
        if store.pending <= 0 or self._closed:
            return None
        order = self._order
        count = len(order)
        for step in range(count):
            target = order[(self._next + step) % count]
            room = self.window - target.inflight
            if not target.alive or room <= 0:
                continue
            self._next = (self._next + step + 1) % count
            # A short queue is spread over the workers rather than sent whole to the first one.
            alive = sum(1 for t in order if t.alive)
            share = -(-store.pending // alive)
            records = store.take(min(self.page_size, room, share))
            if not records:
                return None
            self._grant()
            if records[0].task_id == ROOT_TASK_ID and target.address != self.address:
                # The root always runs on the master's own worker.
                root, records = records[0], records[1:]
                own = self._targets[self.address]
                self._register(own, [root])
                sender = asyncio.create_task(self._send(own, [root], registered=True))
                self._background.add(sender)
                sender.add_done_callback(self._background.discard)
                if not records:
                    return None
            return target, records
        return None

    def _register(self, target: _Target, records: list[TaskRecord]) -> None:
        inflight = self._inflight
        address = target.address
        for record in records:
            inflight[record.task_id] = _Flight(record, address)
        target.inflight += len(records)
        if isinstance(self.store, ServerTaskStore):
            self.store.assigned(records, worker_id=target.worker_id, address=address)
        names: dict[str, int] = {}
        for record in records:
            names[record.name] = names.get(record.name, 0) + 1
        for name, n in names.items():
            self.progress.sent(name, address, target.worker_id, n)
        self.progress.page(len(records))

    async def _send(self, target: _Target, records: list[TaskRecord], *, registered: bool = False) -> None:
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
        self._sending += 1
        target.starts += 1
        target.starting += 1
        try:
            reply = await self.peers.client(target.address).StartTasks(request)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._lose(target, f"could not start tasks: {_error_text(exc)}")
            return
        finally:
            self._sending -= 1
            target.starting -= 1
        if not reply.accepted:
            self._lose(target, f"refused tasks: {reply.message}")
        else:
            inflight = self._inflight
            for record in records:
                flight = inflight.get(record.task_id)
                if flight is not None and flight.address == target.address:
                    flight.incarnation = reply.incarnation
        self._check_done()

    # -- failover ------------------------------------------------------------------------------------

    def _lose(self, target: _Target, why: str) -> None:
        """Drop a worker: its unfinished tasks go back to the queue for the others."""
        if not target.alive:
            return
        target.alive = False
        target.why_lost = why
        mine = [f for f in self._inflight.values() if f.address == target.address]
        self._take_back(target, mine)
        if self._closed:
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
        if not any(t.alive for t in self._order):
            reasons = "; ".join(f"{t.worker_id} ({t.address}): {t.why_lost}" for t in self._order)
            self._fail(f"no worker left to run the tasks: {reasons}")
            return
        self._wake.set()

    def _take_back(self, target: _Target, flights: list[_Flight]) -> None:
        """These unfinished tasks leave the worker (and its counters); the caller queues them again."""
        inflight = self._inflight
        for flight in flights:
            del inflight[flight.record.task_id]
            self.progress.taken_back(flight.record.name, target.address, was_running=flight.running)
            if not flight.parked:
                target.inflight -= 1

    async def _alive_loop(self) -> None:
        while not self._closed:
            await asyncio.sleep(self.alive_interval)
            others = [t for t in self._order if t.alive and t.address != self.address]
            await asyncio.gather(*(self._check_alive(t) for t in others))

    async def _check_alive(self, target: _Target) -> None:
        """Ask about the instance, not just the process: a worker restarted on the same address is up
        but lost its tasks. Its unfinished tasks are sent again; it stays a worker of the instance."""
        starts = target.starts
        request = peer_pb2.CheckAliveRequest(instance_id=self.spec.instance_id)
        try:
            reply = await self.peers.client(target.address).CheckAlive(request)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._lose(target, f"not reachable: {_error_text(exc)}")
            return
        if not target.alive or self._closed:
            return
        mine = [f for f in self._inflight.values() if f.address == target.address]
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

    async def _progress_loop(self) -> None:
        while not self._closed:
            await asyncio.sleep(self.progress_interval)
            try:
                self.report_progress(self.progress.to_json())
            except Exception:
                log.exception("instance %s: progress report failed", self.spec.instance_id)
            if isinstance(self.store, ServerTaskStore) and not self._closed:
                try:
                    again = await self.store.poll_retries()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    log.warning("instance %s: task state not read: %s", self.spec.instance_id, exc)
                    continue
                if again:
                    self._retry(again)

    # -- cleanup -------------------------------------------------------------------------------------

    async def _destroy_everywhere(self) -> None:
        request = peer_pb2.DestroyRequest(instance_id=self.spec.instance_id)
        # The master's own worker too, even when it was dropped from the dispatch (e.g. it refused
        # tasks while shutting down): it holds the instance's tasks and queued reports all the same.
        addresses = {t.address for t in self._order if t.alive} | {self.address}
        await asyncio.gather(*(self._call_quietly(a, "DestroyInstance", request) for a in sorted(addresses)))

    async def _call_quietly(self, address: str, method: str, request: object) -> None:
        try:
            await getattr(self.peers.client(address), method)(request)
        except Exception as exc:
            log.debug("instance %s: %s on %s failed: %s", self.spec.instance_id, method, address, exc)
