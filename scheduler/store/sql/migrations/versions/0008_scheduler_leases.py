"""Scheduler replicas and group leases: which replica dispatches each group, so several schedulers can
share one PostgreSQL database (the owner's writes are fenced by its lease token).

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision: str | None = "0007"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "sx_schedulers",
        sa.Column("replica_id", sa.String(200), primary_key=True),
        sa.Column("grpc_address", sa.String(255), nullable=False),
        sa.Column("http_url", sa.String(255), nullable=False),
        sa.Column("presence_key", sa.Integer(), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "sx_group_leases",
        sa.Column("namespace", sa.String(64), primary_key=True),
        sa.Column("group_id", sa.String(128), primary_key=True),
        sa.Column("holder", sa.String(200), nullable=False),
        sa.Column("token", sa.String(64), nullable=False),
        sa.Column("epoch", sa.BigInteger(), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("acquired_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("workers", sa.Text(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("sx_group_leases")
    op.drop_table("sx_schedulers")
