"""The store's tables as SQLAlchemy Core metadata (the migrations create the same schema).

Datetimes go through `UtcDateTime`: stored as UTC, read back timezone-aware UTC on every backend
(SQLite keeps no offset, so it is restored on the way out).
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.engine import Dialect

metadata = sa.MetaData()

# SQLite only auto-increments an INTEGER PRIMARY KEY; PostgreSQL gets BIGSERIAL.
_BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


class UtcDateTime(sa.TypeDecorator[datetime]):
    """A timezone-aware datetime stored as UTC; naive datetimes are refused."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(
                f"datetime {value.isoformat()!r} is naive: the store needs timezone-aware values"
            )
        value = value.astimezone(UTC)
        # SQLite compares datetimes as text: one offset-free format keeps the order right.
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def _created() -> sa.Column[datetime]:
    return sa.Column("created_at", UtcDateTime(), nullable=False)


namespaces = sa.Table(
    "sx_namespaces",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("name", sa.String(255), nullable=False),
    sa.Column("description", sa.Text(), nullable=False, default=""),
    _created(),
)

groups = sa.Table(
    "sx_groups",
    metadata,
    sa.Column("namespace", sa.String(64), primary_key=True),
    sa.Column("group_id", sa.String(128), primary_key=True),
    sa.Column("app_key", sa.String(255), nullable=False),
    sa.Column("description", sa.Text(), nullable=False, default=""),
    _created(),
)

access_keys = sa.Table(
    "sx_access_keys",
    metadata,
    sa.Column("key_id", sa.String(128), primary_key=True),
    sa.Column("secret", sa.String(255), nullable=False),
    sa.Column("namespace", sa.String(64), nullable=False, index=True),
    sa.Column("enabled", sa.Boolean(), nullable=False),
    _created(),
)

nonces = sa.Table(
    "sx_nonces",
    metadata,
    sa.Column("nonce", sa.String(255), primary_key=True),
    sa.Column("expires_at", UtcDateTime(), nullable=False, index=True),
)

jobs = sa.Table(
    "sx_jobs",
    metadata,
    sa.Column("id", _BigId, primary_key=True, autoincrement=True),
    sa.Column("namespace", sa.String(64), nullable=False),
    sa.Column("namespace_source", sa.String(64), nullable=True),
    sa.Column("group_id", sa.String(128), nullable=False),
    sa.Column("name", sa.String(255), nullable=False),
    sa.Column("spec", sa.Text(), nullable=False),
    sa.Column("time_type", sa.Integer(), nullable=False),
    sa.Column("enabled", sa.Boolean(), nullable=False),
    sa.Column("managed", sa.Boolean(), nullable=False),
    sa.Column("next_fire_time", UtcDateTime(), nullable=True),
    _created(),
    sa.Column("updated_at", UtcDateTime(), nullable=False),
    sa.UniqueConstraint("namespace", "group_id", "name", name="uq_sx_jobs_name"),
    sqlite_autoincrement=True,  # never reuse a deleted job's id
)

# The trigger engine's look-ups: a partial index holding only jobs that can fire. Queries must repeat
# this predicate literally (JOB_CAN_FIRE) or SQLite will not use the index.
JOB_CAN_FIRE = sa.and_(jobs.c.enabled == sa.true(), jobs.c.next_fire_time.isnot(None))
sa.Index(
    "ix_sx_jobs_due",
    jobs.c.next_fire_time,
    jobs.c.id,
    sqlite_where=JOB_CAN_FIRE,
    postgresql_where=JOB_CAN_FIRE,
)

instances = sa.Table(
    "sx_instances",
    metadata,
    sa.Column("id", _BigId, primary_key=True, autoincrement=True),
    sa.Column("job_id", sa.BigInteger(), sa.ForeignKey("sx_jobs.id", ondelete="CASCADE"), nullable=False),
    sa.Column("namespace", sa.String(64), nullable=False),
    sa.Column("group_id", sa.String(128), nullable=False),
    sa.Column("status", sa.Integer(), nullable=False),
    sa.Column("trigger_type", sa.Integer(), nullable=False),
    sa.Column("time_type", sa.Integer(), nullable=False),
    sa.Column("schedule_time", UtcDateTime(), nullable=False),
    sa.Column("data_time", UtcDateTime(), nullable=False),
    _created(),
    sa.Column("attempt", sa.Integer(), nullable=False),
    sa.Column("instance_parameters", sa.Text(), nullable=False),
    sa.Column("wf_instance_id", sa.BigInteger(), nullable=True),
    sa.Column("start_time", UtcDateTime(), nullable=True),
    sa.Column("end_time", UtcDateTime(), nullable=True),
    sa.Column("worker_id", sa.String(255), nullable=False),
    sa.Column("worker_addr", sa.String(255), nullable=False),
    sa.Column("executor", sa.String(255), nullable=False),
    sa.Column("result", sa.Text(), nullable=False),
    sa.Column("progress", sa.Text(), nullable=False),
    sa.Column("retry_of", sa.BigInteger(), nullable=True),
    sa.Column("timeout_alarmed", sa.Boolean(), nullable=False),
    # Workflow nodes: JSON [[job name, result], ...] of the upstream jobs (migration 0003).
    sa.Column("upstream_data", sa.Text(), nullable=True),
    # A manual re-run (trigger type 4): the instance it runs again (migration 0007).
    sa.Column("rerun_of", sa.BigInteger(), nullable=True),
    sa.Index("ix_sx_instances_job", "job_id", "id"),
    sa.Index("ix_sx_instances_job_status", "job_id", "status"),  # active counts (migration 0004)
    sa.Index("ix_sx_instances_status", "status", "id"),
    sa.Index("ix_sx_instances_retry_of", "retry_of"),
    sqlite_autoincrement=True,
)

calendars = sa.Table(
    "sx_calendars",
    metadata,
    sa.Column("namespace", sa.String(64), primary_key=True),
    sa.Column("name", sa.String(255), primary_key=True),
    sa.Column("description", sa.Text(), nullable=False),
    sa.Column("days", sa.Text(), nullable=False),
)

alarms = sa.Table(
    "sx_alarms",
    metadata,
    sa.Column("id", _BigId, primary_key=True, autoincrement=True),
    sa.Column("namespace", sa.String(64), nullable=False),
    sa.Column("group_id", sa.String(128), nullable=False),
    sa.Column("job_id", sa.BigInteger(), nullable=False),
    sa.Column("instance_id", sa.BigInteger(), nullable=True),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("channel", sa.String(64), nullable=False),
    sa.Column("message", sa.Text(), nullable=False),
    sa.Column("delivered", sa.Boolean(), nullable=False),
    _created(),
    sa.Column("detail", sa.Text(), nullable=False),
    sa.Index("ix_sx_alarms_job", "job_id", "id"),
    sa.Index("ix_sx_alarms_group", "namespace", "group_id", "id"),
    sqlite_autoincrement=True,
)

workflows = sa.Table(
    "sx_workflows",
    metadata,
    sa.Column("id", _BigId, primary_key=True, autoincrement=True),
    sa.Column("namespace", sa.String(64), nullable=False),
    sa.Column("group_id", sa.String(128), nullable=False),
    sa.Column("name", sa.String(255), nullable=False),
    sa.Column("definition", sa.Text(), nullable=False),
    sa.Column("enabled", sa.Boolean(), nullable=False),
    sa.Column("managed", sa.Boolean(), nullable=False),
    sa.Column("next_fire_time", UtcDateTime(), nullable=True),
    _created(),
    sa.Column("updated_at", UtcDateTime(), nullable=False),
    sa.UniqueConstraint("namespace", "group_id", "name", name="uq_sx_workflows_name"),
    sa.Index("ix_sx_workflows_due", "enabled", "next_fire_time"),
    sqlite_autoincrement=True,
)

wf_instances = sa.Table(
    "sx_wf_instances",
    metadata,
    sa.Column("id", _BigId, primary_key=True, autoincrement=True),
    sa.Column(
        "workflow_id", sa.BigInteger(), sa.ForeignKey("sx_workflows.id", ondelete="CASCADE"), nullable=False
    ),
    sa.Column("namespace", sa.String(64), nullable=False),
    sa.Column("group_id", sa.String(128), nullable=False),
    sa.Column("status", sa.Integer(), nullable=False),
    sa.Column("trigger_type", sa.Integer(), nullable=False),
    sa.Column("schedule_time", UtcDateTime(), nullable=False),
    sa.Column("graph", sa.Text(), nullable=False),
    sa.Column("instance_parameters", sa.Text(), nullable=False),
    _created(),
    sa.Column("end_time", UtcDateTime(), nullable=True),
    sa.Column("result", sa.Text(), nullable=False),
    sa.Index("ix_sx_wf_instances_workflow", "workflow_id", "id"),
    sqlite_autoincrement=True,
)

wf_nodes = sa.Table(
    "sx_wf_nodes",
    metadata,
    sa.Column(
        "wf_instance_id",
        sa.BigInteger(),
        sa.ForeignKey("sx_wf_instances.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("job_id", sa.BigInteger(), primary_key=True),
    sa.Column("instance_id", sa.BigInteger(), nullable=False),
    sa.Column("status", sa.Integer(), nullable=False),
    sa.Column("result", sa.Text(), nullable=False),
)

# Subtasks of parallel instances (migration 0002); they go with their instance (pruning, job deletion).
tasks = sa.Table(
    "sx_tasks",
    metadata,
    sa.Column(
        "instance_id",
        sa.BigInteger(),
        sa.ForeignKey("sx_instances.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("task_id", sa.BigInteger(), primary_key=True),
    sa.Column("name", sa.String(255), nullable=False),
    sa.Column("payload", sa.LargeBinary(), nullable=False),
    sa.Column("parent_id", sa.BigInteger(), nullable=False),
    sa.Column("batch_seq", sa.BigInteger(), nullable=False),
    sa.Column("status", sa.Integer(), nullable=False),
    sa.Column("worker_id", sa.String(255), nullable=False),
    sa.Column("worker_addr", sa.String(255), nullable=False),
    sa.Column("attempt", sa.Integer(), nullable=False),
    sa.Column("result", sa.Text(), nullable=False),
    sa.Column("start_time", UtcDateTime(), nullable=True),
    sa.Column("end_time", UtcDateTime(), nullable=True),
)

# Backfills (data re-runs of a job or a workflow over past fire times, migration 0007): one row per
# backfill, and one per fire time it runs; the fire's primary key makes each fire time's instance (a
# workflow backfill's: workflow instance) exist at most once.
backfills = sa.Table(
    "sx_backfills",
    metadata,
    sa.Column("id", _BigId, primary_key=True, autoincrement=True),
    sa.Column("job_id", sa.BigInteger(), sa.ForeignKey("sx_jobs.id", ondelete="CASCADE"), nullable=True),
    sa.Column(
        "workflow_id", sa.BigInteger(), sa.ForeignKey("sx_workflows.id", ondelete="CASCADE"), nullable=True
    ),
    sa.Column("namespace", sa.String(64), nullable=False),
    sa.Column("group_id", sa.String(128), nullable=False),
    sa.Column("start_time", UtcDateTime(), nullable=False),
    sa.Column("end_time", UtcDateTime(), nullable=False),
    sa.Column("concurrency", sa.Integer(), nullable=False),
    sa.Column("skip_successful", sa.Boolean(), nullable=False),
    sa.Column("instance_parameters", sa.Text(), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    _created(),
    sa.Column("updated_at", UtcDateTime(), nullable=False),
    sa.Index("ix_sx_backfills_group", "namespace", "group_id", "id"),
    sa.Index("ix_sx_backfills_state", "state", "id"),
    sqlite_autoincrement=True,
)

backfill_fires = sa.Table(
    "sx_backfill_fires",
    metadata,
    sa.Column(
        "backfill_id",
        sa.BigInteger(),
        sa.ForeignKey("sx_backfills.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("schedule_time", UtcDateTime(), primary_key=True),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("instance_id", sa.BigInteger(), nullable=True),
    sa.Index("ix_sx_backfill_fires_state", "backfill_id", "state", "schedule_time"),
)

# Scheduler replicas sharing the store, and which one dispatches each group (migration 0008).
schedulers = sa.Table(
    "sx_schedulers",
    metadata,
    sa.Column("replica_id", sa.String(200), primary_key=True),
    sa.Column("grpc_address", sa.String(255), nullable=False),
    sa.Column("http_url", sa.String(255), nullable=False),
    sa.Column("presence_key", sa.Integer(), nullable=False),
    sa.Column("expires_at", UtcDateTime(), nullable=False),
)

group_leases = sa.Table(
    "sx_group_leases",
    metadata,
    sa.Column("namespace", sa.String(64), primary_key=True),
    sa.Column("group_id", sa.String(128), primary_key=True),
    sa.Column("holder", sa.String(200), nullable=False),
    sa.Column("token", sa.String(64), nullable=False),
    sa.Column("epoch", sa.BigInteger(), nullable=False),
    sa.Column("expires_at", UtcDateTime(), nullable=False),
    sa.Column("acquired_at", UtcDateTime(), nullable=False),
    sa.Column("workers", sa.Text(), nullable=False),
    # When the holder last renewed it: another replica tells a stalled owner by it (migration 0009).
    sa.Column("renewed_at", UtcDateTime(), nullable=True),
)

# StopInstance asked on a replica that does not dispatch the instance's group (migration 0009): kept so
# that the group's next owner applies it when the owner it was signalled to stops or dies first.
stop_requests = sa.Table(
    "sx_stop_requests",
    metadata,
    sa.Column(
        "instance_id",
        sa.BigInteger(),
        sa.ForeignKey("sx_instances.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("reason", sa.Text(), nullable=False),
    sa.Column("requested_at", UtcDateTime(), nullable=False),
)

# The instances' online logs (migrations 0010 and 0011; lines a row each in 0006): lines numbered per
# instance, stored in blocks of consecutive lines one worker shipped (a row per block: a row per line
# cost the scheduler more than the workers' whole logging), gone with their instance. A block holds
# either ``lines``, its columns as JSON, or ``packed``, the worker's LogBatch message as it came
# (`sql/_logs.py`); ``max_level``: its highest level, so a level filter skips blocks.
instance_log_blocks = sa.Table(
    "sx_instance_log_blocks",
    metadata,
    sa.Column(
        "instance_id",
        sa.BigInteger(),
        sa.ForeignKey("sx_instances.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("first_seq", sa.Integer(), primary_key=True),
    sa.Column("line_count", sa.Integer(), nullable=False),
    sa.Column("max_level", sa.Integer(), nullable=False),
    sa.Column("worker_id", sa.String(255), nullable=False),
    sa.Column("lines", sa.Text(), nullable=True),
    sa.Column("packed", sa.LargeBinary(), nullable=True),
)

VERSION_TABLE = "sx_alembic_version"

__all__ = [
    "JOB_CAN_FIRE",
    "VERSION_TABLE",
    "UtcDateTime",
    "access_keys",
    "alarms",
    "backfill_fires",
    "backfills",
    "calendars",
    "group_leases",
    "groups",
    "instance_log_blocks",
    "jobs",
    "metadata",
    "namespaces",
    "nonces",
    "schedulers",
    "stop_requests",
    "tasks",
    "wf_instances",
    "wf_nodes",
    "workflows",
]
