"""The scheduler's Prometheus metrics, on a registry of its own (several schedulers in one process, as
in tests, never share one).

The hot paths only increment a counter or observe a histogram with labels from small fixed sets (enum
names, the OpenAPI's fixed paths). Gauges that mirror state (queue depth, workers per group) are read
when scraped, so nothing updates them as the state changes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from sx.processors import MisfirePolicy
from sx.scheduler.store import Instance

__all__ = ["SchedulerMetrics"]

# Seconds: a due instance normally starts within milliseconds; minutes mean no worker was free.
_DELAY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900)
_FAST_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)


class _WorkersPerGroup(Collector):
    def __init__(self, count: Callable[[], dict[tuple[str, str], int]]) -> None:
        self._count = count

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "sx_scheduler_workers_connected",
            "Workers connected now, per group.",
            labels=["namespace", "group"],
        )
        for (namespace, group), n in sorted(self._count().items()):
            family.add_metric([namespace, group], n)
        yield family


class SchedulerMetrics:
    """Every metric of one scheduler; ``exposition()`` is what ``/metrics`` serves."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.fires = Counter(
            "sx_scheduler_fires",
            "Scheduled fires handed to dispatch (not those refused at maxConcurrency), by time type.",
            ["time_type"],
            registry=r,
        )
        self.missed_fires = Counter(
            "sx_scheduler_missed_fires",
            "Jobs found with missed fires, by misfire policy.",
            ["policy"],
            registry=r,
        )
        self.instances_created = Counter(
            "sx_scheduler_instances_created",
            "Instances handed to dispatch, by trigger type.",
            ["trigger_type"],
            registry=r,
        )
        self.instances_finished = Counter(
            "sx_scheduler_instances_finished",
            "Instances finished, by final status and trigger type.",
            ["status", "trigger_type"],
            registry=r,
        )
        self.start_delay = Histogram(
            "sx_scheduler_instance_start_delay_seconds",
            "From an instance's schedule time to its start on a worker (observed when it finishes).",
            buckets=_DELAY_BUCKETS,
            registry=r,
        )
        self.queue_depth = Gauge(
            "sx_scheduler_dispatch_queue_depth", "Instances waiting for a worker.", registry=r
        )
        self.requests = Counter(
            "sx_scheduler_openapi_requests",
            "OpenAPI requests, by endpoint path and HTTP status.",
            ["endpoint", "code"],
            registry=r,
        )
        self.request_seconds = Histogram(
            "sx_scheduler_openapi_request_seconds",
            "OpenAPI request latency, by endpoint path.",
            ["endpoint"],
            buckets=_FAST_BUCKETS,
            registry=r,
        )
        self.store_seconds = Histogram(
            "sx_scheduler_store_operation_seconds",
            "Store transaction latency (read or write), queueing for the connection included.",
            ["operation"],
            buckets=_FAST_BUCKETS,
            registry=r,
        )

    def watch_dispatch(
        self, queue_depth: Callable[[], int], workers_per_group: Callable[[], dict[tuple[str, str], int]]
    ) -> None:
        """Read these when scraped."""
        self.queue_depth.set_function(queue_depth)
        self.registry.register(_WorkersPerGroup(workers_per_group))

    def exposition(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST

    def counting_fires(
        self, on_created: Callable[[list[Instance]], Awaitable[None]]
    ) -> Callable[[list[Instance]], Awaitable[None]]:
        """``on_created`` for the trigger engine, counting each fire by time type first."""

        async def counted(instances: list[Instance]) -> None:
            for instance in instances:
                self.fires.labels(instance.time_type.name.lower()).inc()
            await on_created(instances)

        return counted

    def counting_created(
        self, instance_created: Callable[[Instance], Awaitable[None]]
    ) -> Callable[[Instance], Awaitable[None]]:
        """The dispatcher's hand-over, counting each instance by trigger type first."""

        async def counted(instance: Instance) -> None:
            self.instances_created.labels(instance.trigger_type.name.lower()).inc()
            await instance_created(instance)

        return counted

    def missed(self, policy: MisfirePolicy) -> None:
        self.missed_fires.labels(policy.value).inc()

    async def finished(self, instance: Instance, system_failure: bool) -> None:
        """An ``InstanceEvents`` finished listener."""
        self.instances_finished.labels(instance.status.name.lower(), instance.trigger_type.name.lower()).inc()
        if instance.start_time is not None:
            self.start_delay.observe(max(0.0, (instance.start_time - instance.schedule_time).total_seconds()))

    def request(self, endpoint: str, code: int, seconds: float) -> None:
        self.requests.labels(endpoint, str(code)).inc()
        self.request_seconds.labels(endpoint).observe(seconds)

    def store_operation(self, operation: str, seconds: float) -> None:
        self.store_seconds.labels(operation).observe(seconds)
