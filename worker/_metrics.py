"""A worker's Prometheus metrics, on a registry of its own (several workers in one process, as in tests,
never share one).

Counters move where the event happens (a final report, a hook's end, a page of subtasks sent, a batch
of subtask statuses); what mirrors state (instances running, reports not acknowledged, connected,
reconnects, queued subtasks, log lines dropped) is read when scraped, from the callables ``watch`` is
given, so nothing has to keep it up to date.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import accumulate

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

__all__ = ["WorkerMetrics", "WorkerState"]

# Seconds: hooks run from milliseconds (a subtask) to hours (a nightly job).
_HOOK_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600)


@dataclass(frozen=True)
class WorkerState:
    """Where the scrape-time figures come from."""

    instances_running: Callable[[], int]
    map_queue_depth: Callable[[], int]
    report_backlog: Callable[[], int]
    connected: Callable[[], bool]
    reconnects: Callable[[], int]
    log_lines_dropped: Callable[[], int]


class _StateCollector(Collector):
    def __init__(self, state: WorkerState) -> None:
        self._state = state

    def collect(self) -> Iterator[Metric]:
        s = self._state
        yield _gauge(
            "sx_worker_instances_running",
            "Instances this worker is the master of now.",
            s.instances_running(),
        )
        yield _gauge(
            "sx_worker_map_queue_depth",
            "Subtasks queued, not yet sent, in the map instances this worker is the master of.",
            s.map_queue_depth(),
        )
        yield _gauge(
            "sx_worker_report_backlog",
            "Instance reports the scheduler has not acknowledged yet (re-sent after a reconnect).",
            s.report_backlog(),
        )
        yield _gauge(
            "sx_worker_connected", "1 while registered with a scheduler, else 0.", int(s.connected())
        )
        reconnects = CounterMetricFamily(
            "sx_worker_reconnects", "Registrations with a scheduler after the first one."
        )
        reconnects.add_metric([], s.reconnects())
        yield reconnects
        dropped = CounterMetricFamily(
            "sx_worker_log_lines_dropped",
            "Processor log lines dropped because the buffer was full while the scheduler was away.",
        )
        dropped.add_metric([], s.log_lines_dropped())
        yield dropped


class _HookSeconds(Collector):
    """``sx_worker_hook_seconds``, the histogram of hook run times by processor and hook, kept as plain
    counts: it is observed once per subtask in the map modes, tens of thousands of times a second, where
    prometheus-client's Histogram (a lock and a Python loop over the buckets per observation) cost a
    tenth of a no-op subtask. Observed on the event loop only; read when scraped."""

    def __init__(self, buckets: tuple[float, ...]) -> None:
        self._bounds = buckets
        self._series: dict[tuple[str, str], list[float]] = {}
        """(processor, hook) -> observations per bucket (the first bound at or above each; the last
        slot but one is +Inf), then their sum."""

    def observe(self, processor: str, hook: str, seconds: float) -> None:
        series = self._series.get((processor, hook))
        if series is None:
            series = self._series[processor, hook] = [0.0] * (len(self._bounds) + 2)
        series[bisect_left(self._bounds, seconds)] += 1
        series[-1] += seconds

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(
            "sx_worker_hook_seconds",
            "Processor hook run time (queueing for a slot excluded), by processor and hook.",
            labels=["processor", "hook"],
        )
        for (processor, hook), series in list(self._series.items()):
            counts = list(accumulate(series[:-1]))
            bounds = [str(float(bound)) for bound in self._bounds] + [
                "+Inf"
            ]  # as prometheus-client shows them
            family.add_metric([processor, hook], list(zip(bounds, counts, strict=True)), series[-1])
        yield family


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


class WorkerMetrics:
    """Every metric of one worker; ``exposition()`` is what its ``/metrics`` serves."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.instances_finished = Counter(
            "sx_worker_instances_finished",
            "Instances this worker was the master of that ended, by final status.",
            ["status"],
            registry=r,
        )
        self.hook_seconds = _HookSeconds(_HOOK_BUCKETS)
        r.register(self.hook_seconds)
        self.subtasks_dispatched = Counter(
            "sx_worker_subtasks_dispatched",
            "Map subtasks the masters on this worker sent to workers (itself included).",
            registry=r,
        )
        self.subtasks_finished = Counter(
            "sx_worker_subtasks_finished",
            "Map subtasks the masters on this worker saw finish, by status.",
            ["status"],
            registry=r,
        )

    def watch(self, state: WorkerState) -> None:
        """Read ``state`` when scraped."""
        self.registry.register(_StateCollector(state))

    def exposition(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST

    def instance_finished(self, status: str) -> None:
        self.instances_finished.labels(status).inc()

    def hook_finished(self, processor: str, hook: str, seconds: float) -> None:
        self.hook_seconds.observe(processor, hook, seconds)

    def subtasks_sent(self, count: int) -> None:
        self.subtasks_dispatched.inc(count)

    def subtasks_done(self, succeeded: int, failed: int) -> None:
        if succeeded:
            self.subtasks_finished.labels("success").inc(succeeded)
        if failed:
            self.subtasks_finished.labels("failed").inc(failed)
