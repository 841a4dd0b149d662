"""Calling processor hooks: what runs an instance's hooks here (``resolve``) and under which limit.

``HookRunner`` calls one hook under the worker-wide concurrency limit (async hooks on the loop, blocking
ones in a bounded thread pool). A hook that must wait for work other hooks do first (a map task waiting
for room in its master's queue) lends its slot meanwhile (``lend``, ``take_back``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from sx.processors import (
    Codec,
    JobContext,
    JobType,
    Processor,
    ProcessorDefinition,
    ProcessResult,
    Registry,
    RegistryError,
    invoke,
    script_processor_for,
)
from sx.processors.engine import JSON_CODEC, LogSink, describe_exception
from sx.protos import NO_TRACING, Tracing
from sx.protos.v1 import common_pb2
from sx.worker._convert import execute_mode_of, job_type_of
from sx.worker._metrics import WorkerMetrics

__all__ = ["SCRIPT_JOB_TYPES", "HookRunner", "Resolved", "SubmitRefused", "resolve"]

log = logging.getLogger("sx.worker")

SCRIPT_JOB_TYPES = (JobType.PYTHON, JobType.SHELL, JobType.GO)


class SubmitRefused(Exception):
    """An instance or task this worker cannot run; the message goes back to the sender."""


@dataclass(frozen=True, slots=True)
class Resolved:
    """The processor object that runs an instance's hooks on this worker."""

    processor: Processor
    definition: ProcessorDefinition | None
    """None for script jobs."""
    codec: Codec

    def has_hook(self, hook: str) -> bool:
        if self.definition is None:
            return hook in ("process", "kill")
        return self.definition.has_hook(hook)

    @property
    def name(self) -> str:
        """The processor's registered name, or the script processor's class name."""
        return self.definition.name if self.definition is not None else type(self.processor).__name__


def resolve(registry: Registry, spec: common_pb2.InstanceSpec) -> Resolved:
    """Find what runs ``spec``: its registered processor, or a script processor for script jobs.

    Raises ``SubmitRefused`` with a message naming the processor (or job type) when there is none.
    """
    try:
        execute_mode_of(spec)
        job_type = job_type_of(spec)
    except ValueError as exc:
        raise SubmitRefused(str(exc)) from None
    if spec.processor:
        try:
            definition = registry.get(spec.processor)
        except RegistryError:
            raise SubmitRefused(f"processor {spec.processor!r} is not registered here") from None
        return Resolved(processor=definition.create(), definition=definition, codec=definition.codec)
    if spec.content and job_type in SCRIPT_JOB_TYPES:
        return Resolved(processor=script_processor_for(job_type), definition=None, codec=JSON_CODEC)
    raise SubmitRefused(
        f"instance {spec.instance_id} of job {spec.job_name!r} names no processor and has no script content"
    )


class HookRunner:
    """Calls processor hooks under the worker-wide limit on hooks running at once."""

    def __init__(
        self,
        *,
        concurrency: int,
        thread_pool_size: int,
        log_sink: LogSink | None = None,
        metrics: WorkerMetrics | None = None,
        tracing: Tracing = NO_TRACING,
    ) -> None:
        self.concurrency = concurrency
        self.log_sink = log_sink
        """Given to every hook's context: where its log lines are shipped."""
        self.thread_pool_size = thread_pool_size
        """Threads blocking hooks run on (the map engine keeps one of them free of waits)."""
        self._slots = asyncio.Semaphore(concurrency)
        self._pool = ThreadPoolExecutor(max_workers=thread_pool_size, thread_name_prefix="sx-hook")
        self.running = 0
        # Every part that runs hooks holds this runner, so it carries the worker's telemetry to them.
        self.metrics = metrics
        self.tracing = tracing

    async def call(self, resolved: Resolved, hook: str, ctx: JobContext) -> ProcessResult:
        """Run ``hook`` of ``resolved``'s processor; failures come back as FAILED results."""
        async with self._slots:
            self.running += 1
            started = time.perf_counter()
            try:
                if not self.tracing.enabled:  # the common case, kept free of a span's cost
                    return await self._invoke(resolved, hook, ctx)
                with self.tracing.span(f"sx.hook {hook}", attributes={"sx.processor": resolved.name}) as span:
                    result = await self._invoke(resolved, hook, ctx)
                    if not result.ok:
                        span.fail(result.result)
                    return result
            finally:
                self.running -= 1
                if self.metrics is not None:
                    self.metrics.hook_finished(resolved.name, hook, time.perf_counter() - started)

    async def call_kill(self, resolved: Resolved, ctx: JobContext) -> None:
        """Mark ``ctx`` cancelled and call the processor's kill hook (outside the limit: it must not wait)."""
        ctx.cancel()
        if not resolved.has_hook("kill"):
            return
        outcome = await self._invoke(resolved, "kill", ctx)
        if not outcome.ok:
            log.warning("kill hook of instance %s failed: %s", ctx.instance_id, outcome.result)

    async def _invoke(self, resolved: Resolved, hook: str, ctx: JobContext) -> ProcessResult:
        function = getattr(resolved.processor, hook)
        if ctx.log_sink is None:
            ctx.log_sink = self.log_sink
        try:
            return await invoke(function, ctx, executor=self._pool)
        except Exception as exc:  # invoke reports hook failures itself; this is a defect in the worker
            log.exception("calling %s of instance %s failed", hook, ctx.instance_id)
            return ProcessResult.failure(describe_exception(exc))

    def lend(self) -> None:
        """A running hook waits for work other hooks must do first (room in a map queue): free its slot."""
        self.running -= 1
        self._slots.release()

    async def take_back(self) -> None:
        """Take back the slot ``lend`` freed. Completes even if the caller is cancelled meanwhile: the
        end of ``call`` releases the slot in any case, so it must be held again by then."""
        self.running += 1
        await asyncio.shield(asyncio.ensure_future(self._slots.acquire()))

    def close(self) -> None:
        """Stop the thread pool without waiting: a blocking hook ignoring cancellation may never return."""
        self._pool.shutdown(wait=False, cancel_futures=True)
