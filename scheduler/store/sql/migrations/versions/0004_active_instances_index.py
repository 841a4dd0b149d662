"""An index on instances by job and status, so counting a job's active instances (on every trigger and
ExecuteJob, against maxConcurrency) reads only those, however long the kept history.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision: str | None = "0003"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_index("ix_sx_instances_job_status", "sx_instances", ["job_id", "status"])


def downgrade() -> None:
    op.drop_index("ix_sx_instances_job_status", table_name="sx_instances")
