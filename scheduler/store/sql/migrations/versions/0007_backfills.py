"""Re-runs and backfills: an instance's ``rerun_of``, and the backfills with one row per fire time.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision: str | None = "0006"
branch_labels: str | None = None
depends_on: str | None = None

# A frozen copy of the schema at this revision.
_BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _ts(name: str, *, nullable: bool = False) -> sa.Column[datetime]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.add_column("sx_instances", sa.Column("rerun_of", sa.BigInteger(), nullable=True))
    op.create_table(
        "sx_backfills",
        sa.Column("id", _BigId, primary_key=True, autoincrement=True),
        sa.Column("job_id", sa.BigInteger(), sa.ForeignKey("sx_jobs.id", ondelete="CASCADE"), nullable=True),
        sa.Column(
            "workflow_id",
            sa.BigInteger(),
            sa.ForeignKey("sx_workflows.id", ondelete="CASCADE"),
            nullable=True,
        ),
        sa.Column("namespace", sa.String(64), nullable=False),
        sa.Column("group_id", sa.String(128), nullable=False),
        _ts("start_time"),
        _ts("end_time"),
        sa.Column("concurrency", sa.Integer(), nullable=False),
        sa.Column("skip_successful", sa.Boolean(), nullable=False),
        sa.Column("instance_parameters", sa.Text(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        _ts("created_at"),
        _ts("updated_at"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_sx_backfills_group", "sx_backfills", ["namespace", "group_id", "id"])
    op.create_index("ix_sx_backfills_state", "sx_backfills", ["state", "id"])
    op.create_table(
        "sx_backfill_fires",
        sa.Column(
            "backfill_id",
            sa.BigInteger(),
            sa.ForeignKey("sx_backfills.id", ondelete="CASCADE"),
            nullable=False,
        ),
        _ts("schedule_time"),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("instance_id", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("backfill_id", "schedule_time"),
    )
    op.create_index(
        "ix_sx_backfill_fires_state", "sx_backfill_fires", ["backfill_id", "state", "schedule_time"]
    )


def downgrade() -> None:
    op.drop_index("ix_sx_backfill_fires_state", table_name="sx_backfill_fires")
    op.drop_table("sx_backfill_fires")
    op.drop_index("ix_sx_backfills_state", table_name="sx_backfills")
    op.drop_index("ix_sx_backfills_group", table_name="sx_backfills")
    op.drop_table("sx_backfills")
    with op.batch_alter_table("sx_instances") as batch:
        batch.drop_column("rerun_of")
