"""Workflows: definitions, workflow instances, their nodes, and instances' upstream data.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None

# A frozen copy of the schema at this revision.
_BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _ts(name: str, *, nullable: bool = False) -> sa.Column[datetime]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.add_column("sx_instances", sa.Column("upstream_data", sa.Text(), nullable=True))
    op.create_table(
        "sx_workflows",
        sa.Column("id", _BigId, primary_key=True, autoincrement=True),
        sa.Column("namespace", sa.String(64), nullable=False),
        sa.Column("group_id", sa.String(128), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("definition", sa.Text(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("managed", sa.Boolean(), nullable=False),
        _ts("next_fire_time", nullable=True),
        _ts("created_at"),
        _ts("updated_at"),
        sa.UniqueConstraint("namespace", "group_id", "name", name="uq_sx_workflows_name"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_sx_workflows_due", "sx_workflows", ["enabled", "next_fire_time"])
    op.create_table(
        "sx_wf_instances",
        sa.Column("id", _BigId, primary_key=True, autoincrement=True),
        sa.Column(
            "workflow_id",
            sa.BigInteger(),
            sa.ForeignKey("sx_workflows.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("namespace", sa.String(64), nullable=False),
        sa.Column("group_id", sa.String(128), nullable=False),
        sa.Column("status", sa.Integer(), nullable=False),
        sa.Column("trigger_type", sa.Integer(), nullable=False),
        _ts("schedule_time"),
        sa.Column("graph", sa.Text(), nullable=False),
        sa.Column("instance_parameters", sa.Text(), nullable=False),
        _ts("created_at"),
        _ts("end_time", nullable=True),
        sa.Column("result", sa.Text(), nullable=False),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_sx_wf_instances_workflow", "sx_wf_instances", ["workflow_id", "id"])
    op.create_table(
        "sx_wf_nodes",
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


def downgrade() -> None:
    op.drop_table("sx_wf_nodes")
    op.drop_index("ix_sx_wf_instances_workflow", table_name="sx_wf_instances")
    op.drop_table("sx_wf_instances")
    op.drop_index("ix_sx_workflows_due", table_name="sx_workflows")
    op.drop_table("sx_workflows")
    with op.batch_alter_table("sx_instances") as batch:
        batch.drop_column("upstream_data")
