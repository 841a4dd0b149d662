"""Stop requests: a StopInstance asked on a replica that does not dispatch the instance's group, kept
until the instance ends so that the group's next owner applies it when the current one dies first.
And when a group's lease was last renewed, by which the other replicas tell a stalled owner.

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision: str | None = "0008"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "sx_stop_requests",
        sa.Column(
            "instance_id",
            sa.BigInteger(),
            sa.ForeignKey("sx_instances.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("requested_at", sa.DateTime(timezone=True), nullable=False),
    )

    op.add_column("sx_group_leases", sa.Column("renewed_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("sx_group_leases") as batch:
        batch.drop_column("renewed_at")
    op.drop_table("sx_stop_requests")
