"""Typed answers of the scheduler's OpenAPI, as the client returns them.

Wire names are camelCase; attributes are snake_case. Models ignore fields they do not know, so a newer
scheduler that adds a field does not break an older client. A job's configuration is read into a
:class:`~sx.processors._spec.JobSpec` so it can be compared with the definition in code.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from sx.processors import InstanceStatus, JobSpec, TaskStatus, WorkflowSpec

__all__ = [
    "AccessKeyInfo",
    "AlarmInfo",
    "AlarmPage",
    "BackfillFireInfo",
    "BackfillFirePage",
    "BackfillInfo",
    "BackfillPage",
    "BackfillPlanInfo",
    "CalendarInfo",
    "GroupInfo",
    "InstanceDetail",
    "InstanceLog",
    "InstanceLogLine",
    "InstancePage",
    "JobInfo",
    "JobPage",
    "NamespaceInfo",
    "PlannedFire",
    "TaskDetail",
    "TaskPage",
    "TaskRetry",
    "WorkerInfo",
    "WorkerPage",
    "WorkflowInfo",
    "WorkflowInstanceDetail",
    "WorkflowInstancePage",
    "WorkflowNodeDetail",
]


class _Answer(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore", alias_generator=to_camel, populate_by_name=True)


class NamespaceInfo(_Answer):
    """A namespace (extension endpoints)."""

    namespace: str
    name: str = ""
    description: str = ""


class GroupInfo(_Answer):
    """An application group; ``app_key`` is what its workers present to join."""

    namespace: str
    group_id: str
    app_key: str
    description: str = ""


class CalendarInfo(_Answer):
    """A calendar: the days a cron job using it may fire."""

    namespace: str
    name: str
    description: str = ""
    days: tuple[date, ...] = ()


class AccessKeyInfo(_Answer):
    """An access key; ``access_key_secret`` only in the answer that created it."""

    access_key_id: str
    namespace: str
    enabled: bool = True
    access_key_secret: str | None = None


class InstanceDetail(_Answer):
    """JobInstanceDetail. Dates are ``yyyy-MM-dd HH:mm:ss`` in the job's zone, "" when unset."""

    instance_id: int
    job_id: int
    status: InstanceStatus
    start_date: str = ""
    end_date: str = ""
    schedule_date: str = ""
    data_date: str = ""
    executor: str = ""
    work_addr: str = ""
    result: str = ""
    progress: str = ""
    time_type: int = 0
    trigger_type: int = 0
    """1 scheduled, 2 data re-run (a backfill), 3 api, 4 manual re-run, 5 system retry."""
    rerun_of: int | None = None
    """Extension: for a manual re-run (trigger type 4), the instance it runs again."""


class BackfillInfo(_Answer):
    """A backfill (RerunJob, RerunWorkflow extensions) and its progress: fire times pending, running,
    done, failed and skipped. ``state`` is running, stopped or finished; dates are in the job's (the
    workflow's) zone. ``job_id`` is None for a workflow's backfill, ``workflow_id`` for a job's."""

    backfill_id: int
    job_id: int | None = None
    workflow_id: int | None = None
    state: str
    start_date: str = ""
    end_date: str = ""
    concurrency: int = 1
    skip_successful: bool = False
    total: int = 0
    pending: int = 0
    running: int = 0
    done: int = 0
    failed: int = 0
    skipped: int = 0
    create_time: str = ""
    update_time: str = ""


class BackfillPage(_Answer):
    """A page of a group's backfills, newest first."""

    total: int
    page_num: int
    page_size: int
    backfills: tuple[BackfillInfo, ...] = ()


class BackfillFireInfo(_Answer):
    """One fire time of a backfill: its schedule date (the job's zone), state and instance."""

    schedule_date: str
    state: str
    instance_id: int | None = None


class BackfillFirePage(_Answer):
    """A page of a backfill's fire times, in schedule order."""

    total: int
    page_num: int
    page_size: int
    fires: tuple[BackfillFireInfo, ...] = ()


class PlannedFire(_Answer):
    """A fire time a backfill would run (a dry run), and whether it would skip it."""

    schedule_date: str
    skip: bool = False


class BackfillPlanInfo(_Answer):
    """A dry run of RerunJob (``job_id``) or RerunWorkflow (``workflow_id``): how many fire times the
    range holds, how many would be skipped, and the fire times in schedule order (the first 10,000)."""

    job_id: int | None = None
    workflow_id: int | None = None
    total: int
    skipped: int = 0
    fire_times: tuple[PlannedFire, ...] = ()


class InstancePage(_Answer):
    """A page of a job's instances (ListInstances extension)."""

    total: int
    page_num: int
    page_size: int
    instances: tuple[InstanceDetail, ...] = ()


class WorkerInfo(_Answer):
    """A worker connected to the scheduler (ListWorkers extension). ``running`` is what its last
    heartbeat said it runs, ``assigned`` the instances the scheduler gave it that have not finished;
    dates as in InstanceDetail, in the scheduler's zone."""

    worker_id: str
    address: str
    processors: tuple[str, ...] = ()
    capacity: int = 0
    running: int = 0
    assigned: int = 0
    last_heartbeat: str = ""
    connected_at: str = ""
    draining: bool = False
    version: str = ""
    labels: dict[str, str] = Field(default_factory=dict)


class WorkerPage(_Answer):
    """A page of a group's connected workers, in the order they registered."""

    total: int
    page_num: int
    page_size: int
    workers: tuple[WorkerInfo, ...] = ()


class AlarmInfo(_Answer):
    """One recorded alarm (ListAlarms extension): ``error`` says why it was not delivered."""

    alarm_id: int
    time: str
    job_id: int
    instance_id: int | None = None
    kind: str
    channel: str
    message: str = ""
    delivered: bool
    error: str = ""


class AlarmPage(_Answer):
    """A page of a group's alarm history, newest first."""

    total: int
    page_num: int
    page_size: int
    alarms: tuple[AlarmInfo, ...] = ()


class InstanceLogLine(_Answer):
    """One line of an instance's online log (GetInstanceLog extension). ``offset`` numbers it in the
    instance's log from 1; ``time`` is in the scheduler's zone with milliseconds, ``time_ms`` epoch
    milliseconds; ``task_id`` / ``task_name`` name the subtask in map modes (0 and "" otherwise)."""

    offset: int
    time: str
    time_ms: int = 0
    level: str = "INFO"
    worker_id: str = ""
    task_id: int = 0
    task_name: str = ""
    message: str = ""


class InstanceLog(_Answer):
    """Lines of an instance's online log after ``offset``; read on from ``next_offset``. ``complete``:
    the instance finished a while ago and every line was read, so none will follow."""

    job_id: int
    instance_id: int
    offset: int
    next_offset: int
    complete: bool = False
    lines: tuple[InstanceLogLine, ...] = ()


class TaskDetail(_Answer):
    """A subtask of a parallel instance (ListInstanceTasks extension); dates as in InstanceDetail.
    ``attempt`` counts how often it was dispatched."""

    task_id: int
    task_name: str
    status: TaskStatus
    worker_addr: str = ""
    attempt: int = 0
    result: str = ""
    start_date: str = ""
    end_date: str = ""


class TaskPage(_Answer):
    """A page of a parallel instance's subtasks, by task id."""

    total: int
    page_num: int
    page_size: int
    tasks: tuple[TaskDetail, ...] = ()


class TaskRetry(_Answer):
    """RetryInstanceTasks' answer: the tasks reset to INIT; ``reopened`` when the instance had finished
    and was submitted again (``status`` is then WAITING)."""

    instance_id: int
    task_ids: tuple[int, ...] = ()
    reopened: bool
    status: InstanceStatus


class JobInfo(BaseModel):
    """GetJobInfo's answer: the job's id, state and configuration as a JobSpec."""

    model_config = ConfigDict(frozen=True)

    job_id: int
    enabled: bool
    managed: bool = False
    """Created or adopted by job sync (``sx-worker sync``); only such jobs are ever pruned."""
    namespace_source: str | None = None
    spec: JobSpec = Field(repr=False)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def status(self) -> int:
        """The original's status code: 1 enabled, 0 disabled."""
        return 1 if self.enabled else 0

    @classmethod
    def from_wire(cls, data: Mapping[str, Any]) -> JobInfo:
        """Read a JobConfigInfo plus ``jobId``, ``status`` and ``managed``."""
        return cls(
            job_id=int(data["jobId"]),
            enabled=int(data.get("status", 1)) == 1,
            managed=bool(data.get("managed", False)),
            namespace_source=data.get("namespaceSource"),
            spec=JobSpec.from_job_config_info(data),
        )


class JobPage(BaseModel):
    """A page of a group's jobs (ListJobs extension)."""

    model_config = ConfigDict(frozen=True)

    total: int
    page_num: int
    page_size: int
    jobs: tuple[JobInfo, ...] = ()

    @classmethod
    def from_wire(cls, data: Mapping[str, Any]) -> JobPage:
        return cls(
            total=int(data["total"]),
            page_num=int(data["pageNum"]),
            page_size=int(data["pageSize"]),
            jobs=tuple(JobInfo.from_wire(job) for job in data.get("jobs", [])),
        )


class WorkflowInfo(BaseModel):
    """GetWorkflow's answer: id, state, the graph by job id, and the definition by job name."""

    model_config = ConfigDict(frozen=True)

    workflow_id: int
    enabled: bool
    managed: bool = False
    nodes: tuple[int, ...] = ()
    edges: tuple[tuple[int, int], ...] = ()
    job_names: dict[int, str] = Field(default_factory=dict)
    spec: WorkflowSpec = Field(repr=False)

    @property
    def name(self) -> str:
        return self.spec.name

    @classmethod
    def from_wire(cls, data: Mapping[str, Any]) -> WorkflowInfo:
        names = {int(job["jobId"]): str(job.get("name", "")) for job in data.get("jobs", [])}
        return cls(
            workflow_id=int(data["workflowId"]),
            enabled=int(data.get("status", 1)) == 1,
            managed=bool(data.get("managed", False)),
            nodes=tuple(int(node) for node in data.get("nodes", [])),
            edges=tuple((int(a), int(b)) for a, b in data.get("edges", [])),
            job_names=names,
            spec=WorkflowSpec.from_wire(data, job_names=names),
        )


class WorkflowNodeDetail(_Answer):
    """One node of a workflow instance; ``status`` 0 means not started yet."""

    job_id: int
    name: str = ""
    instance_id: int | None = None
    status: int = 0
    result: str = ""


class WorkflowInstanceDetail(_Answer):
    """GetWorkflowInstance's answer (``nodes`` is empty in lists)."""

    wf_instance_id: int
    workflow_id: int
    status: InstanceStatus
    trigger_type: int = 0
    schedule_date: str = ""
    end_date: str = ""
    instance_parameters: str = ""
    result: str = ""
    nodes: tuple[WorkflowNodeDetail, ...] = ()

    def node(self, name_or_job_id: str | int) -> WorkflowNodeDetail:
        """The node of that job name or id; KeyError when there is none."""
        for node in self.nodes:
            if node.name == name_or_job_id or node.job_id == name_or_job_id:
                return node
        raise KeyError(name_or_job_id)


class WorkflowInstancePage(_Answer):
    total: int
    page_num: int
    page_size: int
    instances: tuple[WorkflowInstanceDetail, ...] = ()
