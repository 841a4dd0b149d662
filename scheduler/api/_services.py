"""The services the OpenAPI's handlers call (handlers never reach the store)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from sx.scheduler._errors import NotFound
from sx.scheduler.api._auth import AccessKeys
from sx.scheduler.dispatch import WorkerInfo
from sx.scheduler.jobs import (
    AdminService,
    AlarmHistory,
    BackfillService,
    InstanceLogs,
    JobService,
    TaskService,
)
from sx.scheduler.store import Store
from sx.scheduler.workflows import WorkflowService

__all__ = ["Services", "WorkerDirectory"]


class WorkerDirectory(Protocol):
    """Who is connected now (the dispatcher)."""

    def connected_workers(self, namespace: str, group_id: str) -> list[WorkerInfo]: ...


@dataclass(frozen=True, slots=True)
class Services:
    """Jobs and instances, namespaces/groups/calendars, parallel tasks, access keys, and workflows,
    the alarm history, the connected workers, the backfills and the instances' online logs (each None
    when the scheduler serves none)."""

    jobs: JobService
    admin: AdminService
    tasks: TaskService
    access_keys: AccessKeys
    workflows: WorkflowService | None = None
    alarms: AlarmHistory | None = None
    workers: WorkerDirectory | None = None
    backfills: BackfillService | None = None
    logs: InstanceLogs | None = None

    @classmethod
    def jobs_only(cls, store: Store, jobs: JobService) -> Services:
        """A scheduler without workflows (tools, tests, benchmarks): the other services over ``store``
        and the job service's hooks."""
        return cls(
            jobs=jobs,
            admin=AdminService(store, wake_triggers=jobs.hooks.wake_triggers),
            tasks=TaskService(store, jobs=jobs, hand_over=jobs.hooks.instance_created),
            access_keys=AccessKeys(store),
            alarms=AlarmHistory(store),
            backfills=BackfillService(store, jobs=jobs, wake_driver=lambda: None),
            logs=InstanceLogs(store, jobs=jobs, clock=jobs.clock),
        )

    def workflow_service(self, workflow_id: int | None = None) -> WorkflowService:
        """The workflow service; NotFound when this scheduler serves no workflows (naming
        ``workflow_id`` when the request names one)."""
        if self.workflows is not None:
            return self.workflows
        if workflow_id is not None:
            raise NotFound(f"workflow {workflow_id} not found", field="workflowId", value=workflow_id)
        raise NotFound("workflows are not served by this scheduler", field="workflowId")

    def alarm_history(self) -> AlarmHistory:
        """The alarm history; NotFound when this scheduler keeps none."""
        if self.alarms is None:
            raise NotFound("the alarm history is not served by this scheduler")
        return self.alarms

    def backfill_service(self) -> BackfillService:
        """The backfills; NotFound when this scheduler runs none."""
        if self.backfills is None:
            raise NotFound("backfills are not served by this scheduler")
        return self.backfills

    def instance_logs(self) -> InstanceLogs:
        """The instances' online logs; NotFound when this scheduler keeps none."""
        if self.logs is None:
            raise NotFound("instance logs are not served by this scheduler")
        return self.logs

    def worker_directory(self) -> WorkerDirectory:
        """The connected workers; NotFound when this scheduler has no dispatcher."""
        if self.workers is None:
            raise NotFound("workers are not listed by this scheduler")
        return self.workers
