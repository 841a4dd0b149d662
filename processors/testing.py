"""Unit-test processors without a scheduler or a network.

``run_processor`` builds a synthetic ``JobContext`` and calls the hooks the worker would call:

- ``Processor``: ``process`` once;
- ``BroadcastProcessor``: ``pre_process``, ``process`` once per simulated worker (sharding ids
  ``0 .. sharding_num-1``), then ``post_process`` with their results;
- map kinds: the whole map tree in this process, breadth first: the root task, then every mapped
  subtask (payloads go through the job's codec, as on the wire), then ``reduce`` with every result.

Sync hooks run in a thread pool, as in the worker, so ``ctx.map`` behaves as it does there.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sx.processors._context import JobContext, TaskMapper, UpstreamData
from sx.processors._enums import REDUCE_TASK_NAME, ROOT_TASK_NAME, InstanceStatus, JobType, TaskStatus
from sx.processors._errors import PayloadError
from sx.processors._invoke import invoke
from sx.processors._kinds import Processor, ProcessorKind
from sx.processors._registry import ProcessorDefinition, Registry, default_registry, definition_of
from sx.processors._result import ProcessResult

__all__ = ["DEFAULT_MAX_TASKS", "run_processor", "run_processor_sync"]

DEFAULT_MAX_TASKS = 10_000
"""The most tasks one simulated map run may create; more means a map loop in the processor."""


async def run_processor(
    cls_or_name: type[Processor] | str,
    *,
    job_parameters: str = "",
    instance_parameters: str = "",
    task: Any = None,
    task_name: str = ROOT_TASK_NAME,
    sharding_id: int = 0,
    sharding_num: int = 1,
    sharding_parameter: str = "",
    job_id: int = 1,
    job_name: str | None = None,
    instance_id: int = 1,
    wf_instance_id: int = 0,
    attempt: int = 0,
    schedule_time: datetime | None = None,
    upstream_data: Sequence[UpstreamData] = (),
    registry: Registry | None = None,
    max_tasks: int = DEFAULT_MAX_TASKS,
) -> ProcessResult:
    """Run a processor (a decorated class or a registered name) and return the instance's result.

    For map kinds, ``task_name``/``task`` choose where the tree starts (the root by default); reduce
    only runs for a tree started at the root. Instance results follow the worker's precedence: a
    non-empty post_process/reduce result, else the first failed task's result, else the first task's.
    """
    if isinstance(cls_or_name, str):
        definition = (registry or default_registry()).get(cls_or_name)
    else:
        definition = definition_of(cls_or_name)
    instance = definition.create()
    when = schedule_time or datetime.now(UTC)

    def context(**fields: Any) -> JobContext:
        base: dict[str, Any] = {
            "job_id": job_id,
            "job_name": job_name or definition.name,
            "job_type": JobType.PYTHON,
            "instance_id": instance_id,
            "wf_instance_id": wf_instance_id,
            "job_parameters": job_parameters,
            "instance_parameters": instance_parameters,
            "schedule_time": when,
            "attempt": attempt,
            "max_attempt": definition.spec.max_attempt,
            "sharding_id": sharding_id,
            "sharding_num": sharding_num,
            "sharding_parameter": sharding_parameter,
            "upstream_data": list(upstream_data),
            "execute_mode": definition.mode,
            "codec": definition.codec,
            "worker_addr": "127.0.0.1:0",
        }
        base.update(fields)
        return JobContext(**base)

    with concurrent.futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="sx-test") as executor:
        runner = _Runner(definition, instance, executor)
        if definition.kind is ProcessorKind.BROADCAST:
            return await runner.broadcast(context, sharding_num)
        if definition.kind.is_map:
            start = task if task is not None or task_name != ROOT_TASK_NAME else ROOT_TASK_NAME
            return await runner.map_tree(context, start, task_name, max_tasks)
        return await runner.call("process", context(task=task, task_name=task_name))


def run_processor_sync(cls_or_name: type[Processor] | str, **options: Any) -> ProcessResult:
    """``run_processor`` for synchronous tests; takes the same keywords."""
    return asyncio.run(run_processor(cls_or_name, **options))


@dataclass
class _Task:
    task_id: int
    name: str
    payload: bytes


class _CollectingMapper(TaskMapper):
    """Queues mapped payloads to run later in this process."""

    def __init__(self, max_tasks: int) -> None:
        self.pending: collections.deque[_Task] = collections.deque()
        self.next_id = 1
        self.max_tasks = max_tasks

    async def map(self, ctx: JobContext, payloads: list[bytes], task_name: str) -> None:
        if self.next_id + len(payloads) > self.max_tasks + 1:
            raise PayloadError(f"the run mapped more than {self.max_tasks} tasks; is a task mapping itself?")
        for payload in payloads:
            self.pending.append(_Task(self.next_id, task_name, payload))
            self.next_id += 1


class _Runner:
    def __init__(
        self, definition: ProcessorDefinition, instance: Processor, executor: concurrent.futures.Executor
    ) -> None:
        self.definition = definition
        self.instance = instance
        self.executor = executor

    async def call(self, hook: str, ctx: JobContext) -> ProcessResult:
        return await invoke(getattr(self.instance, hook), ctx, executor=self.executor)

    async def broadcast(self, context: Any, workers: int) -> ProcessResult:
        if workers < 1:
            raise ValueError(f"sharding_num={workers!r}: a broadcast needs at least one worker")
        if self.definition.has_hook("pre_process"):
            pre = await self.call("pre_process", context(sharding_id=0, sharding_num=workers))
            if not pre.ok:
                return ProcessResult.failure(f"pre_process failed: {pre.result}")
        results: dict[int, ProcessResult] = {}
        for shard in range(workers):
            ctx = context(task_id=shard, sharding_id=shard, sharding_num=workers)
            results[shard] = await self.call("process", ctx)
        return await self._finish("post_process", context, results, run_on_failure=True, root_id=0)

    async def map_tree(self, context: Any, task: Any, task_name: str, max_tasks: int) -> ProcessResult:
        codec = self.definition.codec
        mapper = _CollectingMapper(max_tasks)
        start = _Task(0, task_name, codec.encode(task))
        mapper.pending.append(start)
        results: dict[int, ProcessResult] = {}
        while mapper.pending:
            item = mapper.pending.popleft()
            ctx = context(
                task_id=item.task_id,
                task_name=item.name,
                task=codec.decode(item.payload),
                task_payload=item.payload,
                mapper=mapper,
            )
            results[item.task_id] = await self.call("process", ctx)
        if task_name != ROOT_TASK_NAME:
            return _combine(results, root_id=0)
        return await self._finish(
            "reduce", context, results, run_on_failure=self.definition.reduce_on_failure, root_id=0
        )

    async def _finish(
        self,
        hook: str,
        context: Any,
        results: dict[int, ProcessResult],
        *,
        run_on_failure: bool,
        root_id: int,
    ) -> ProcessResult:
        outcome = _combine(results, root_id=root_id)
        if not self.definition.has_hook(hook) or (not outcome.ok and not run_on_failure):
            return outcome
        ctx = context(
            task_results={task_id: r.result for task_id, r in results.items()},
            task_statuses={task_id: _task_status(r) for task_id, r in results.items()},
            task_name=REDUCE_TASK_NAME if hook == "reduce" else ROOT_TASK_NAME,
        )
        final = await self.call(hook, ctx)
        if not final.ok:
            return final
        status = outcome.status
        return ProcessResult(status, final.result or outcome.result)


def _task_status(result: ProcessResult) -> TaskStatus:
    return TaskStatus.SUCCESS if result.ok else TaskStatus.FAILED


def _combine(results: dict[int, ProcessResult], *, root_id: int) -> ProcessResult:
    for task_id in sorted(results):
        if not results[task_id].ok:
            return results[task_id]
    first = results.get(root_id) or results[min(results)]
    return ProcessResult(InstanceStatus.SUCCESS, first.result)
