"""The worker's side of its messages: what it tells the scheduler (Register, heartbeats, the instances'
reports) and what it does on the scheduler's (submissions, kills, forgotten task files) and on peers'
(the master of an instance).

``MessageHandler`` is the connection's handler and the instances' report sink: the connection calls it
once per message, and it acts on the parts ``Worker`` built (``Instances``, the ``TaskRunner``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from importlib import metadata

from sx.processors import InstanceStatus, Registry
from sx.protos import Tracing
from sx.protos.v1 import scheduler_pb2
from sx.worker._connection import SchedulerConnection
from sx.worker._instances import Instances
from sx.worker._log_shipper import LogShipper
from sx.worker._metrics import WorkerMetrics
from sx.worker._peer import StatusReceiver
from sx.worker._settings import WorkerSettings
from sx.worker.map import TaskRunner, held_task_files, remove_task_file, task_file_path

__all__ = ["MessageHandler"]

log = logging.getLogger("sx.worker")


class MessageHandler:
    """Answers the scheduler connection and the peers, and sends the instances' reports, for one worker.

    ``tasks``, ``instances`` and ``connection`` give the parts ``Worker.run`` builds (None before).
    """

    def __init__(
        self,
        *,
        settings: WorkerSettings,
        registry: Registry,
        worker_id: str,
        address: Callable[[], str],
        draining: Callable[[], bool],
        logs: LogShipper,
        metrics: WorkerMetrics,
        tracing: Tracing,
        tasks: Callable[[], TaskRunner | None],
        instances: Callable[[], Instances | None],
        connection: Callable[[], SchedulerConnection | None],
    ) -> None:
        self._settings = settings
        self._registry = registry
        self._worker_id = worker_id
        self._address = address
        """``host:port`` where peers reach this worker (empty until the peer server started)."""
        self._draining = draining
        self._logs = logs
        self._metrics = metrics
        self._tracing = tracing
        self._tasks = tasks
        self._instances = instances
        self._connection = connection

    @property
    def running_instance_ids(self) -> list[int]:
        """Instances this worker is the master of (running, or reporting their end)."""
        instances = self._instances()
        return instances.ids if instances is not None else []

    def master_of(self, instance_id: int) -> StatusReceiver | None:
        """The master of ``instance_id`` on this worker, for the status its tasks' workers send it."""
        instances = self._instances()
        return instances.master_of(instance_id) if instances is not None else None

    # -- the connection's handler ------------------------------------------------------------------

    def register_message(self) -> scheduler_pb2.Register:
        """The Register sent on every (re)connect."""
        return scheduler_pb2.Register(
            namespace=self._settings.namespace,
            group_id=self._settings.group_id,
            worker_id=self._worker_id,
            address=self._address(),
            labels=self._settings.labels,
            processors=self._registry.names,
            capacity=self._settings.concurrency,
            version=_version(),
            running_instance_ids=self._held_instance_ids(),
            task_file_instance_ids=held_task_files(self._settings.data_dir),
        )

    def _held_instance_ids(self) -> list[int]:
        """What this worker answers for at registration: the instances it runs, and those whose final
        report the scheduler has not acknowledged (a scheduler that restarted before applying it must
        not send the instance to another worker; the report follows the registration)."""
        connection = self._connection()
        reporting = connection.reporting_instance_ids if connection is not None else []
        return list(dict.fromkeys([*self.running_instance_ids, *reporting]))

    def heartbeat_message(self) -> scheduler_pb2.Heartbeat:
        """This worker's load, sent every heartbeat interval."""
        tasks = self._tasks()
        running = len(self.running_instance_ids) + (tasks.running if tasks is not None else 0)
        return scheduler_pb2.Heartbeat(
            running=running,
            capacity=self._settings.concurrency,
            cpu_load1=_load1(),
            rss_bytes=_rss_bytes(),
            running_instance_ids=self.running_instance_ids,
            draining=self._draining(),
        )

    def on_submit(self, submit: scheduler_pb2.SubmitInstance) -> scheduler_pb2.SubmitReply:
        """Accept an instance and start it in the background, or refuse it with a reason."""
        instances = self._instances()
        if instances is None:
            return scheduler_pb2.SubmitReply(
                instance_id=submit.instance.instance_id, accepted=False, message="worker not started"
            )
        return instances.submit(submit)

    async def on_kill(self, kill: scheduler_pb2.KillInstance) -> None:
        """Stop an instance this worker is the master of; it then reports FAILED "killed"."""
        instances = self._instances()
        if instances is not None:
            await instances.kill(kill)

    def on_forget_task_files(self, forget: scheduler_pb2.ForgetTaskFiles) -> None:
        """The scheduler says these instances ended (elsewhere, or while this worker was away): their
        batch task files would only fill the disk. A file of an instance this worker runs stays."""
        running = set(self.running_instance_ids)
        for instance_id in forget.instance_ids:
            if instance_id in running:
                continue
            path = task_file_path(self._settings.data_dir, instance_id)
            if path.exists():
                remove_task_file(path)
                log.info("removed the task file of instance %d, which ended elsewhere", instance_id)

    # -- the instances' reports --------------------------------------------------------------------

    def report(self, report: scheduler_pb2.InstanceReport) -> None:
        """Send an instance's report (now, or after reconnecting); a final one after its last lines."""
        if report.status in _FINAL_STATUSES:
            self._observe_end(report)
        connection = self._connection()
        if connection is not None:
            if report.status in _FINAL_STATUSES:
                self._logs.ship(force=True)  # the instance's last lines go before its final report
            connection.report(report)

    def _observe_end(self, report: scheduler_pb2.InstanceReport) -> None:
        """Count an instance's final report, and mark the instance's span (current: the report is sent
        from the instance's task) with its outcome, carrying the span to the scheduler."""
        status = InstanceStatus(report.status)
        self._metrics.instance_finished(status.name.lower())
        span = self._tracing.current()
        if status is InstanceStatus.FAILED:
            span.fail(report.result)
        report.trace_context.update(span.carrier())


_FINAL_STATUSES = frozenset({int(InstanceStatus.SUCCESS), int(InstanceStatus.FAILED)})


def _version() -> str:
    try:
        return metadata.version("sx-worker")
    except metadata.PackageNotFoundError:
        return "0"


def _load1() -> float:
    try:
        return os.getloadavg()[0]
    except OSError:
        return 0.0


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0
