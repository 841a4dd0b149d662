"""An instance's spans on the scheduler's side (with ``tracing = true``; no-ops otherwise).

One trace per run: ``sx.instance.create`` when it is created (a fire, ExecuteJob, a retry, a workflow
step; a child of the OpenAPI request's span when there is one), ``sx.instance.dispatch`` when it is sent
to a worker, whose context the InstanceSpec carries (``trace_context``) to the worker's
``sx.instance`` span, and ``sx.instance.report`` when its final report arrives, a child of the
worker's span (the report carries it back). Each scheduler span is closed at once: what lies between
them is the worker's. The creation contexts are kept in memory only, so an instance dispatched after a
restart starts its trace at the dispatch.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Awaitable, Callable

from sx.processors import InstanceStatus
from sx.protos import NO_TRACING, Tracing
from sx.protos.v1 import common_pb2, scheduler_pb2
from sx.scheduler.store import Instance

__all__ = ["InstanceTracing"]

_KEEP = 100_000
"""Creation contexts kept (the oldest go first): bounds memory when instances wait long."""


class InstanceTracing:
    """The spans above, through ``tracing``."""

    def __init__(self, tracing: Tracing = NO_TRACING) -> None:
        self.tracing = tracing
        self._created: OrderedDict[int, dict[str, str]] = OrderedDict()

    def tracing_created(
        self, instance_created: Callable[[Instance], Awaitable[None]]
    ) -> Callable[[Instance], Awaitable[None]]:
        """The dispatcher's hand-over, opening each instance's creation span around it."""
        if not self.tracing.enabled:
            return instance_created

        async def traced(instance: Instance) -> None:
            attributes: dict[str, str | int] = {
                "sx.job_id": instance.job_id,
                "sx.instance_id": instance.id,
                "sx.trigger_type": instance.trigger_type.name.lower(),
                "sx.time_type": instance.time_type.name.lower(),
            }
            with self.tracing.span("sx.instance.create", attributes=attributes) as span:
                carrier = span.carrier()
                if carrier:
                    self._created[instance.id] = carrier
                    while len(self._created) > _KEEP:
                        self._created.popitem(last=False)
                await instance_created(instance)

        return traced

    async def finished(self, instance: Instance, system_failure: bool) -> None:
        """An ``InstanceEvents`` finished listener: its creation context is no longer needed."""
        self._created.pop(instance.id, None)

    def dispatched(self, spec: common_pb2.InstanceSpec, worker_id: str) -> None:
        """``spec`` goes to ``worker_id`` now: its ``trace_context`` becomes the dispatch span's."""
        if not self.tracing.enabled:
            return
        attributes: dict[str, str | int] = {
            "sx.job_id": spec.job_id,
            "sx.instance_id": spec.instance_id,
            "sx.worker_id": worker_id,
        }
        parent = self._created.get(spec.instance_id)
        with self.tracing.span("sx.instance.dispatch", parent=parent, attributes=attributes) as span:
            spec.trace_context.clear()
            spec.trace_context.update(span.carrier())

    def reported(self, report: scheduler_pb2.InstanceReport, worker_id: str) -> None:
        """A final report of ``worker_id`` is applied."""
        if not self.tracing.enabled:
            return
        self._created.pop(report.instance_id, None)
        status = InstanceStatus(report.status)
        attributes: dict[str, str | int] = {
            "sx.instance_id": report.instance_id,
            "sx.worker_id": worker_id,
            "sx.status": status.name.lower(),
        }
        with self.tracing.span(
            "sx.instance.report", parent=report.trace_context, attributes=attributes
        ) as span:
            if status is InstanceStatus.FAILED:
                span.fail(report.result)
