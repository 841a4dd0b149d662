"""The master of a map instance (modes parallel, grid and batch): queue, dispatch, statuses, reduce.

The worker an instance is submitted to runs its ``MapMaster``:

- ``ctx.map`` anywhere sends batches of subtasks to the master, which queues them in its task store
  as far as ``queueSize`` allows (``MapAdmission``: the bound, parked mappers, deepest maps first).
- Dispatchers send pages of queued tasks round robin to the instance's workers, itself included, and
  take the unfinished tasks of a lost worker back (``TaskDispatch``: windows, the root on the master,
  failover). **A subtask can therefore run twice**: make subtasks idempotent.
- Workers run at most ``consumerSize`` tasks of the instance at once, retry failed subtasks
  (``taskMaxAttempt``, ``taskAttemptInterval``; never the root) and report statuses in batches. The
  master de-duplicates them per task id: the first finished status wins.
- Every ``progress_interval`` seconds the master reports RUNNING with the progress JSON.
- When every task finished (nothing queued or in flight), ``reduce`` runs once on the master for a
  ``MapReduceProcessor`` (only when no task failed, unless ``reduce_on_failure``), the instance
  result is decided, and every worker is told ``DestroyInstance``.

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
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from sx.processors import (
    REDUCE_TASK_NAME,
    ROOT_TASK_NAME,
    InstanceStatus,
    JobContext,
    ProcessResult,
    TaskStatus,
)
from sx.processors.engine import shorten_head
from sx.protos.v1 import common_pb2, peer_pb2
from sx.worker._convert import TaskInfo, context_for, execute_mode_of
from sx.worker._hooks import HookRunner, Resolved
from sx.worker._outcome import Outcome, error_text
from sx.worker._peer import PeerClients
from sx.worker.map._admission import MapAdmission
from sx.worker.map._dispatch import TaskDispatch
from sx.worker.map._progress import MapProgress
from sx.worker.map._server_store import ServerTaskStore
from sx.worker.map._store import ROOT_TASK_ID, TaskRecord, TaskStore

__all__ = ["MapMaster"]

log = logging.getLogger("sx.worker")

DEFAULT_PAGE_SIZE = 100
DEFAULT_QUEUE_SIZE = 10_000
DEFAULT_CONSUMER_SIZE = 5
DEFAULT_DISPATCHER_SIZE = 5
MAX_DISPATCHER_SIZE = 200


@dataclass(eq=False)
class MapMaster:
    """Runs one map instance from the worker it was submitted to.

    ``store`` holds its tasks (``MemoryTaskStore`` for grid, ``FileTaskStore`` for batch,
    ``ServerTaskStore`` for parallel); ``report_progress(json)`` sends a RUNNING report carrying the
    progress. Statuses arrive through ``on_statuses`` and map batches through ``map_tasks`` (the Peer
    service routes them by instance id). ``dispatch`` holds the tasks in flight and their workers.
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
    dispatch: TaskDispatch = field(init=False)
    _admission: MapAdmission = field(init=False)
    _wake: asyncio.Event = field(default_factory=asyncio.Event)
    """Set when there may be tasks to send (the dispatchers wait on it)."""
    _done: asyncio.Event = field(default_factory=asyncio.Event)
    _closed: bool = False
    _suspended: bool = False
    _killed: str | None = None
    _fatal: str | None = None
    _root_failure: str | None = None
    _first_failure: str | None = None
    _hook_ctx: JobContext | None = None

    def __post_init__(self) -> None:
        options = self.spec.map_options
        self.page_size = options.page_size if options.page_size > 0 else DEFAULT_PAGE_SIZE
        self.queue_size = options.queue_size if options.queue_size > 0 else DEFAULT_QUEUE_SIZE
        self.consumer_size = options.consumer_size if options.consumer_size > 0 else DEFAULT_CONSUMER_SIZE
        dispatchers = options.dispatcher_size if options.dispatcher_size > 0 else DEFAULT_DISPATCHER_SIZE
        self.dispatcher_size = min(dispatchers, MAX_DISPATCHER_SIZE)
        self.window = 2 * self.page_size + self.consumer_size
        self.mode = execute_mode_of(self.spec)
        self.dispatch = TaskDispatch(
            spec=self.spec,
            peers=self.peers,
            worker_id=self.worker_id,
            address=self.address,
            store=self.store,
            progress=self.progress,
            page_size=self.page_size,
            window=self.window,
            alive_interval=self.alive_interval,
            wake=self._wake,
            closed=self._is_closed,
            room=self._room_made,
            check_done=self._check_done,
            fail=self._fail,
            metrics=self.hooks.metrics,
        )
        self._admission = MapAdmission(
            store=self.store,
            progress=self.progress,
            mode=self.mode,
            queue_size=self.queue_size,
            instance_id=self.spec.instance_id,
            wake=self._wake,
            fail=self._fail,
            park=self.dispatch.park,
            closed=self._is_closed,
            closed_reason=self._closed_reason,
        )

    @property
    def queue_peak(self) -> int:
        """The most tasks the queue held after a map (at most ``queue_size``)."""
        return self._admission.queue_peak

    # -- the Peer service's entry points -------------------------------------------------------------

    async def map_tasks(self, request: peer_pb2.MapTasksRequest) -> peer_pb2.MapTasksReply:
        """Queue what fits of one map request; a ``wait`` request is held up to ``MAP_WAIT`` for room."""
        return await self._admission.map_tasks(request)

    def on_statuses(self, batch: peer_pb2.TaskStatusBatch) -> None:
        """Apply a batch of task statuses; the first finished status of a task wins."""
        if self._suspended:
            return
        inflight = self.dispatch.inflight
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
            targets = self.dispatch.targets
            for address, count in freed.items():
                target = targets.get(address)
                if target is not None:
                    target.inflight -= count
            for (name, address, ok, was_running), count in moves.items():
                progress.finished(name, address, ok=ok, was_running=was_running, count=count)
            if self.hooks.metrics is not None:
                succeeded = sum(1 for _, status, _ in done if status is TaskStatus.SUCCESS)
                self.hooks.metrics.subtasks_done(succeeded, len(done) - succeeded)
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
        self._close()
        self._wake.set()
        if self._hook_ctx is not None:
            self._hook_ctx.cancel()
        request = peer_pb2.PeerKillRequest(instance_id=self.spec.instance_id, reason=reason)
        addresses = [t.address for t in self.dispatch.order]
        await asyncio.gather(*(self._call_quietly(a, "KillInstance", request) for a in addresses))

    # -- running -------------------------------------------------------------------------------------

    async def run(self) -> Outcome:
        """Run the instance to its outcome; cancelled when the instance is killed."""
        spec = self.spec
        dispatch = self.dispatch
        dispatch.enlist_workers()
        server = self.store if isinstance(self.store, ServerTaskStore) else None
        if server is not None:
            await server.open(on_fatal=self._fail)
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
            asyncio.create_task(dispatch.dispatch_loop(), name=f"sx-map-dispatch-{spec.instance_id}-{i}")
            for i in range(self.dispatcher_size)
        ]
        loops.append(asyncio.create_task(dispatch.alive_loop(), name=f"sx-map-alive-{spec.instance_id}"))
        loops.append(asyncio.create_task(self._progress_loop(), name=f"sx-map-progress-{spec.instance_id}"))
        try:
            self._check_done()
            await self._done.wait()
            while server is not None and await self._retried_at_end(server):
                await self._done.wait()
            self._close()
            for loop in loops:
                loop.cancel()
            await asyncio.gather(*loops, return_exceptions=True)
            return await self._finish()
        finally:
            self._close()
            for loop in loops:
                loop.cancel()
            await asyncio.gather(*loops, return_exceptions=True)
            await self._destroy_everywhere()
            dispatch.inflight.clear()
            if server is not None:
                with contextlib.suppress(Exception):
                    await server.aclose()
            # A suspended batch instance keeps its file: the master that takes it over resumes from it.
            self.store.close(remove=not self._suspended)

    def _is_closed(self) -> bool:
        return self._closed

    def _close(self) -> None:
        """No more maps, no more dispatch: every waiting map call is answered."""
        self._closed = True
        self._admission.release_waiting()

    def _room_made(self) -> None:
        self._admission.grant()

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
            self._fail(f"the scheduler's task state could not be read: {error_text(exc)}")
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
            self.progress.reopened(record.name, was_success=old is TaskStatus.SUCCESS)
            if record.task_id == ROOT_TASK_ID:
                self._root_failure = None
        if self.progress.failed == 0:
            self._first_failure = None
        self._done.clear()
        self._wake.set()

    def _fail(self, why: str) -> None:
        if self._fatal is None:
            self._fatal = shorten_head(why)
        self._close()
        self._done.set()

    def _check_done(self) -> None:
        if self.store.pending == 0 and self.dispatch.idle:
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
        self.progress.reduce_started()
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
        self.progress.reduce_finished(ok=outcome.ok)
        return outcome

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
        addresses = {t.address for t in self.dispatch.order if t.alive} | {self.address}
        await asyncio.gather(*(self._call_quietly(a, "DestroyInstance", request) for a in sorted(addresses)))

    async def _call_quietly(self, address: str, method: str, request: object) -> None:
        try:
            await getattr(self.peers.client(address), method)(request)
        except Exception as exc:
            log.debug("instance %s: %s on %s failed: %s", self.spec.instance_id, method, address, exc)
