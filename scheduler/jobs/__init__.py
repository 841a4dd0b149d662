"""Jobs: the job, admin and parallel-task services, the trigger engine, instance lifecycle and alarms.

- ``JobService``: jobs and their instances; ``AdminService``: namespaces, groups, calendars;
  ``TaskService``: the subtasks of parallel instances.
- ``TriggerEngine``: fires due jobs; ``Lifecycle``: retries, re-arming, alarms, history, timeouts;
- ``rerun_instance``: a finished instance run again; ``BackfillService`` (plan, create, stop) and the
  ``BackfillDriver`` loop: a job run again over the fire times of a past range;
  ``AlarmRouter`` and its channels; ``AlarmHistory``: the recorded alarms, paged; ``InstanceLogs``:
  an instance's online log, read and followed.
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
from sx.scheduler.jobs._apprise import AppriseChannel, apprise_installed, ding_to_apprise
from sx.scheduler.jobs._backfill_driver import BackfillDriver, BackfillDriverStore
from sx.scheduler.jobs._backfill_plan import MAX_FIRE_TIMES, backfill_fire_times, check_backfillable
from sx.scheduler.jobs._backfills import (
    DEFAULT_MAX_FIRE_TIMES,
    MAX_BACKFILL_CONCURRENCY,
    BackfillPlan,
    BackfillService,
    BackfillServiceStore,
)
from sx.scheduler.jobs._events import EndedListener, FinishedListener, InstanceEvents, RetryCheck
from sx.scheduler.jobs._hooks import Hooks, NoHooks, OnCreated, SchedulerHooks, StopInstance, hand_over_each
from sx.scheduler.jobs._instance_logs import LOG_SETTLE, InstanceLog, InstanceLogs
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
from sx.scheduler.jobs._rerun import rerun_instance
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
    "DEFAULT_MAX_FIRE_TIMES",
    "LOG_SETTLE",
    "MAX_BACKFILL_CONCURRENCY",
    "MAX_FIRE_TIMES",
    "AdminService",
    "AlarmChannel",
    "AlarmDeliveryError",
    "AlarmHistory",
    "AlarmHistoryStore",
    "AlarmMessage",
    "AlarmRouter",
    "AppriseChannel",
    "BackfillDriver",
    "BackfillDriverStore",
    "BackfillPlan",
    "BackfillService",
    "BackfillServiceStore",
    "EndedListener",
    "FinishedListener",
    "Hooks",
    "InstanceEvents",
    "InstanceLog",
    "InstanceLogs",
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
    "apprise_installed",
    "backfill_fire_times",
    "check_backfillable",
    "check_identifier",
    "data_time",
    "ding_to_apprise",
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
    "rerun_instance",
    "schedule_seconds",
    "zone_or_default",
]
