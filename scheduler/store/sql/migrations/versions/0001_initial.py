"""The initial schema: namespaces, groups, access keys, nonces, jobs, instances, calendars, alarms.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None

# A frozen copy of the schema at this revision: later changes go in new revisions, not here.
_BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _ts(name: str, *, nullable: bool = False) -> sa.Column[datetime]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "sx_namespaces",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        _ts("created_at"),
    )
    op.create_table(
        "sx_groups",
        sa.Column("namespace", sa.String(64), primary_key=True),
        sa.Column("group_id", sa.String(128), primary_key=True),
        sa.Column("app_key", sa.String(255), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        _ts("created_at"),
    )
    op.create_table(
        "sx_access_keys",
        sa.Column("key_id", sa.String(128), primary_key=True),
        sa.Column("secret", sa.String(255), nullable=False),
        sa.Column("namespace", sa.String(64), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        _ts("created_at"),
    )
    op.create_index("ix_sx_access_keys_namespace", "sx_access_keys", ["namespace"])
    op.create_table(
        "sx_nonces",
        sa.Column("nonce", sa.String(255), primary_key=True),
        _ts("expires_at"),
    )
    op.create_index("ix_sx_nonces_expires_at", "sx_nonces", ["expires_at"])
    op.create_table(
        "sx_jobs",
        sa.Column("id", _BigId, primary_key=True, autoincrement=True),
        sa.Column("namespace", sa.String(64), nullable=False),
        sa.Column("namespace_source", sa.String(64), nullable=True),
        sa.Column("group_id", sa.String(128), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("spec", sa.Text(), nullable=False),
        sa.Column("time_type", sa.Integer(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("managed", sa.Boolean(), nullable=False),
        _ts("next_fire_time", nullable=True),
        _ts("created_at"),
        _ts("updated_at"),
        sa.UniqueConstraint("namespace", "group_id", "name", name="uq_sx_jobs_name"),
        sqlite_autoincrement=True,
    )
    # Only jobs that can fire; the predicate is spelled as the store's queries spell it.
    op.create_index(
        "ix_sx_jobs_due",
        "sx_jobs",
        ["next_fire_time", "id"],
        sqlite_where=sa.text("enabled = 1 AND next_fire_time IS NOT NULL"),
        postgresql_where=sa.text("enabled = true AND next_fire_time IS NOT NULL"),
    )
    op.create_table(
        "sx_instances",
        sa.Column("id", _BigId, primary_key=True, autoincrement=True),
        sa.Column("job_id", sa.BigInteger(), sa.ForeignKey("sx_jobs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("namespace", sa.String(64), nullable=False),
        sa.Column("group_id", sa.String(128), nullable=False),
        sa.Column("status", sa.Integer(), nullable=False),
        sa.Column("trigger_type", sa.Integer(), nullable=False),
        sa.Column("time_type", sa.Integer(), nullable=False),
        _ts("schedule_time"),
        _ts("data_time"),
        _ts("created_at"),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("instance_parameters", sa.Text(), nullable=False),
        sa.Column("wf_instance_id", sa.BigInteger(), nullable=True),
        _ts("start_time", nullable=True),
        _ts("end_time", nullable=True),
        sa.Column("worker_id", sa.String(255), nullable=False),
        sa.Column("worker_addr", sa.String(255), nullable=False),
        sa.Column("executor", sa.String(255), nullable=False),
        sa.Column("result", sa.Text(), nullable=False),
        sa.Column("progress", sa.Text(), nullable=False),
        sa.Column("retry_of", sa.BigInteger(), nullable=True),
        sa.Column("timeout_alarmed", sa.Boolean(), nullable=False),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_sx_instances_job", "sx_instances", ["job_id", "id"])
    op.create_index("ix_sx_instances_status", "sx_instances", ["status", "id"])
    op.create_index("ix_sx_instances_retry_of", "sx_instances", ["retry_of"])
    op.create_table(
        "sx_calendars",
        sa.Column("namespace", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(255), primary_key=True),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("days", sa.Text(), nullable=False),
    )
    op.create_table(
        "sx_alarms",
        sa.Column("id", _BigId, primary_key=True, autoincrement=True),
        sa.Column("namespace", sa.String(64), nullable=False),
        sa.Column("group_id", sa.String(128), nullable=False),
        sa.Column("job_id", sa.BigInteger(), nullable=False),
        sa.Column("instance_id", sa.BigInteger(), nullable=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("channel", sa.String(64), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("delivered", sa.Boolean(), nullable=False),
        _ts("created_at"),
        sa.Column("detail", sa.Text(), nullable=False),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_sx_alarms_job", "sx_alarms", ["job_id", "id"])


def downgrade() -> None:
    for table in (
        "sx_alarms",
        "sx_calendars",
        "sx_instances",
        "sx_jobs",
        "sx_nonces",
        "sx_access_keys",
        "sx_groups",
        "sx_namespaces",
    ):
        op.drop_table(table)
