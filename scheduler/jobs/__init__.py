"""Jobs: the job, admin and parallel-task services, the trigger engine, instance lifecycle and alarms.

- ``JobService``: jobs and their instances; ``AdminService``: namespaces, groups, calendars;
  ``TaskService``: the subtasks of parallel instances.
- ``TriggerEngine``: fires due jobs; ``Lifecycle``: retries, re-arming, alarms, history, timeouts;
  ``AlarmRouter`` and its channels; ``AlarmHistory``: the recorded alarms, paged.
- How the services reach the rest of the scheduler: ``SchedulerHooks`` (``Hooks``, ``NoHooks``) and
  ``InstanceEvents`` (the listeners of instance ends).
- Shared lookups (``require_group``, ``in_scope``, ...) and the timing functions (``next_fire_time``).
"""

from sx.scheduler.jobs._admin import AdminService, check_identifier
from sx.scheduler.jobs._alarm_history import AlarmHistory, AlarmHistoryStore
from sx.scheduler.jobs._alarms import (
    AlarmChannel,
    AlarmDeliveryError,
    AlarmMessage,
    AlarmRouter,
    LogChannel,
    SmsChannel,
    WebhookChannel,
)
from sx.scheduler.jobs._events import EndedListener, FinishedListener, InstanceEvents, RetryCheck
from sx.scheduler.jobs._hooks import Hooks, NoHooks, OnCreated, SchedulerHooks, StopInstance, hand_over_each
from sx.scheduler.jobs._lifecycle import Lifecycle, Wakes
from sx.scheduler.jobs._lookup import (
    Scoped,
    found_by_name,
    in_scope,
    name_taken,
    page_offset,
    page_or_named,
    require_group,
    require_namespace,
)
from sx.scheduler.jobs._service import JobService, job_fields, parse_job_spec, zone_or_default
from sx.scheduler.jobs._tasks import TaskRetry, TaskService, TaskServiceStore
from sx.scheduler.jobs._timing import (
    data_time,
    job_zone,
    latest_missed_fire,
    next_fire_time,
    schedule_seconds,
)
from sx.scheduler.jobs._triggers import TriggerEngine, rejected_result

__all__ = [
    "AdminService",
    "AlarmChannel",
    "AlarmDeliveryError",
    "AlarmHistory",
    "AlarmHistoryStore",
    "AlarmMessage",
    "AlarmRouter",
    "EndedListener",
    "FinishedListener",
    "Hooks",
    "InstanceEvents",
    "JobService",
    "Lifecycle",
    "LogChannel",
    "NoHooks",
    "OnCreated",
    "RetryCheck",
    "SchedulerHooks",
    "Scoped",
    "SmsChannel",
    "StopInstance",
    "TaskRetry",
    "TaskService",
    "TaskServiceStore",
    "TriggerEngine",
    "Wakes",
    "WebhookChannel",
    "check_identifier",
    "data_time",
    "found_by_name",
    "hand_over_each",
    "in_scope",
    "job_fields",
    "job_zone",
    "latest_missed_fire",
    "name_taken",
    "next_fire_time",
    "page_offset",
    "page_or_named",
    "parse_job_spec",
    "rejected_result",
    "require_group",
    "require_namespace",
    "schedule_seconds",
    "zone_or_default",
]
