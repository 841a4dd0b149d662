"""Instance logs in blocks: a row holds consecutive lines one worker shipped, their columns as JSON,
instead of a row per line (storing a line cost the scheduler more than logging it cost the worker).
The lines stored so far move into blocks, numbered as they were.

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from sx.scheduler.store._records import NewLogLines
from sx.scheduler.store.sql._logs import decode_block, encode_block

revision = "0010"
down_revision: str | None = "0009"
branch_labels: str | None = None
depends_on: str | None = None

_BLOCK_LINES = 1000

# Frozen copies of the two tables at this revision.
_LINES_COLUMNS = (
    ("instance_id", sa.BigInteger),
    ("seq", sa.Integer),
    ("time_ms", sa.BigInteger),
    ("level", sa.Integer),
    ("worker_id", sa.String),
    ("task_id", sa.BigInteger),
    ("task_name", sa.String),
    ("message", sa.Text),
)
_lines = sa.table("sx_instance_logs", *(sa.column(name, kind()) for name, kind in _LINES_COLUMNS))
_blocks = sa.table(
    "sx_instance_log_blocks",
    sa.column("instance_id", sa.BigInteger()),
    sa.column("first_seq", sa.Integer()),
    sa.column("line_count", sa.Integer()),
    sa.column("max_level", sa.Integer()),
    sa.column("worker_id", sa.String()),
    sa.column("lines", sa.Text()),
)


def _create_lines_table() -> None:
    op.create_table(
        "sx_instance_logs",
        sa.Column(
            "instance_id",
            sa.BigInteger(),
            sa.ForeignKey("sx_instances.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("seq", sa.Integer(), primary_key=True),
        sa.Column("time_ms", sa.BigInteger(), nullable=False),
        sa.Column("level", sa.Integer(), nullable=False),
        sa.Column("worker_id", sa.String(255), nullable=False),
        sa.Column("task_id", sa.BigInteger(), nullable=False),
        sa.Column("task_name", sa.String(255), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
    )


def upgrade() -> None:
    op.create_table(
        "sx_instance_log_blocks",
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
        sa.Column("lines", sa.Text(), nullable=False),
    )
    conn = op.get_bind()
    rows = conn.execute(sa.select(_lines).order_by(_lines.c.instance_id, _lines.c.seq))
    block: list[sa.Row[tuple[int, int, int, int, str, int, str, str]]] = []
    for row in rows:
        # A block is consecutive lines of one instance and one worker, up to _BLOCK_LINES.
        if block and (
            (row.instance_id, row.worker_id, row.seq)
            != (block[0].instance_id, block[0].worker_id, block[-1].seq + 1)
            or len(block) == _BLOCK_LINES
        ):
            _insert_block(conn, block)
            block = []
        block.append(row)
    if block:
        _insert_block(conn, block)
    op.drop_table("sx_instance_logs")


def _insert_block(
    conn: sa.Connection, block: list[sa.Row[tuple[int, int, int, int, str, int, str, str]]]
) -> None:
    first = block[0]
    lines = NewLogLines(
        first.instance_id,
        first.worker_id,
        [row.time_ms for row in block],
        [row.level for row in block],
        [row.message for row in block],
        [row.task_id for row in block],
        [row.task_name for row in block],
    )
    conn.execute(
        sa.insert(_blocks).values(
            instance_id=first.instance_id,
            first_seq=first.seq,
            line_count=len(block),
            max_level=max(lines.levels),
            worker_id=first.worker_id,
            lines=encode_block(lines),
        )
    )


def downgrade() -> None:
    _create_lines_table()
    conn = op.get_bind()
    for row in conn.execute(sa.select(_blocks).order_by(_blocks.c.instance_id, _blocks.c.first_seq)):
        lines = decode_block(row.instance_id, row.first_seq, row.worker_id, row.lines)
        values = [{name: getattr(line, name) for name, _ in _LINES_COLUMNS} for line in lines]
        if values:
            conn.execute(sa.insert(_lines), values)
    op.drop_table("sx_instance_log_blocks")
