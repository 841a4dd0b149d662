"""An index on alarms by namespace and group, so a group's alarm history (the ListAlarms extension)
reads only that group's rows, newest first.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

from alembic import op

revision = "0005"
down_revision: str | None = "0004"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_index("ix_sx_alarms_group", "sx_alarms", ["namespace", "group_id", "id"])


def downgrade() -> None:
    op.drop_index("ix_sx_alarms_group", table_name="sx_alarms")
