"""Instance log blocks may hold the worker's LogBatch message as it came (``packed``) instead of their
columns as JSON (``lines``, now empty for such a block): encoding a batch again as JSON had cost the
scheduler more than the rest of storing it. Blocks stored so far stay as they are; a downgrade turns
packed blocks back into JSON.

Revision ID: 0011
Revises: 0010
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from sx.scheduler.store._records import NewLogLines
from sx.scheduler.store.sql._logs import decode_block, encode_block

revision = "0011"
down_revision: str | None = "0010"
branch_labels: str | None = None
depends_on: str | None = None

# A frozen copy of the table at this revision.
_blocks = sa.table(
    "sx_instance_log_blocks",
    sa.column("instance_id", sa.BigInteger()),
    sa.column("first_seq", sa.Integer()),
    sa.column("worker_id", sa.String()),
    sa.column("lines", sa.Text()),
    sa.column("packed", sa.LargeBinary()),
)


def upgrade() -> None:
    # Batch mode: SQLite changes a column's NULL rule by copying the table.
    with op.batch_alter_table("sx_instance_log_blocks") as blocks:
        blocks.add_column(sa.Column("packed", sa.LargeBinary(), nullable=True))
        blocks.alter_column("lines", existing_type=sa.Text(), nullable=True)


def downgrade() -> None:
    conn = op.get_bind()
    packed_rows = conn.execute(
        sa.select(_blocks.c.instance_id, _blocks.c.first_seq, _blocks.c.worker_id, _blocks.c.packed).where(
            _blocks.c.packed.is_not(None)
        )
    ).all()
    for instance_id, first_seq, worker_id, packed in packed_rows:
        lines = list(decode_block(instance_id, first_seq, worker_id, None, packed))
        columns = NewLogLines(
            instance_id,
            worker_id,
            [line.time_ms for line in lines],
            [line.level for line in lines],
            [line.message for line in lines],
            [line.task_id for line in lines],
            [line.task_name for line in lines],
        )
        conn.execute(
            sa.update(_blocks)
            .where(_blocks.c.instance_id == instance_id, _blocks.c.first_seq == first_seq)
            .values(lines=encode_block(columns), packed=None)
        )
    with op.batch_alter_table("sx_instance_log_blocks") as blocks:
        blocks.drop_column("packed")
        blocks.alter_column("lines", existing_type=sa.Text(), nullable=False)
