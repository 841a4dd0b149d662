"""The scheduler's job OpenAPI from Python: a typed client, its answers, and job sync.

``OpenApiClient`` (async) and ``SyncOpenApiClient`` (blocking) call one endpoint per method and raise
``OpenApiError`` subclasses; ``sync_definitions`` (``plan_sync`` then ``apply_plan``) makes a group's jobs
and workflows match the code. Nothing else of the worker is used here (only ``sx.processors`` and
``sx.protos``): the client works against any scheduler speaking the API.
"""

from sx.worker.openapi._blocking import SyncOpenApiClient
from sx.worker.openapi._client import MAX_PAGE_SIZE, OpenApiClient
from sx.worker.openapi._errors import (
    AuthError,
    ConflictError,
    InvalidRequestError,
    NotFoundError,
    OpenApiError,
    ServerError,
    UnavailableError,
)
from sx.worker.openapi._models import (
    AccessKeyInfo,
    AlarmInfo,
    AlarmPage,
    BackfillFireInfo,
    BackfillFirePage,
    BackfillInfo,
    BackfillPage,
    BackfillPlanInfo,
    CalendarInfo,
    GroupInfo,
    InstanceDetail,
    InstanceLog,
    InstanceLogLine,
    InstancePage,
    JobInfo,
    JobPage,
    NamespaceInfo,
    PlannedFire,
    TaskDetail,
    TaskPage,
    TaskRetry,
    WorkerInfo,
    WorkerPage,
    WorkflowInfo,
    WorkflowInstanceDetail,
    WorkflowInstancePage,
    WorkflowNodeDetail,
)
from sx.worker.openapi._sync_apply import SyncResult, apply_plan, sync_definitions
from sx.worker.openapi._sync_plan import Action, Outcome, PlanEntry, SyncOptions, SyncPlan, plan_sync

__all__ = [
    "MAX_PAGE_SIZE",
    "AccessKeyInfo",
    "Action",
    "AlarmInfo",
    "AlarmPage",
    "AuthError",
    "BackfillFireInfo",
    "BackfillFirePage",
    "BackfillInfo",
    "BackfillPage",
    "BackfillPlanInfo",
    "CalendarInfo",
    "ConflictError",
    "GroupInfo",
    "InstanceDetail",
    "InstanceLog",
    "InstanceLogLine",
    "InstancePage",
    "InvalidRequestError",
    "JobInfo",
    "JobPage",
    "NamespaceInfo",
    "NotFoundError",
    "OpenApiClient",
    "OpenApiError",
    "Outcome",
    "PlanEntry",
    "PlannedFire",
    "ServerError",
    "SyncOpenApiClient",
    "SyncOptions",
    "SyncPlan",
    "SyncResult",
    "TaskDetail",
    "TaskPage",
    "TaskRetry",
    "UnavailableError",
    "WorkerInfo",
    "WorkerPage",
    "WorkflowInfo",
    "WorkflowInstanceDetail",
    "WorkflowInstancePage",
    "WorkflowNodeDetail",
    "apply_plan",
    "plan_sync",
    "sync_definitions",
]
