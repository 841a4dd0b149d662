"""The worker's log buffer (`LogShipper`) cut into batches: whole lines in order, bounded in lines and in
text, so a batch of long lines stays well below gRPC's message limit."""

from __future__ import annotations

import logging

from sx.processors import ExecuteMode, JobContext
from sx.worker._log_shipper import BATCH_LINES, BATCH_TEXT, LogShipper


def test_batches_are_bounded_in_lines_and_text_and_keep_the_order() -> None:
    shipper = LogShipper(lambda: None, capacity=4 * BATCH_LINES)
    ctx = JobContext(job_id=1, instance_id=2, task_id=3, task_name="t", execute_mode=ExecuteMode.GRID)
    short = BATCH_LINES + 1
    long_line = "x" * (BATCH_TEXT // 2)  # two of them fill a batch
    for n in range(short):
        shipper.write(ctx, logging.INFO, f"line {n}")
    for _ in range(4):
        shipper.write(ctx, logging.WARNING, long_line)
    batches = shipper.drain()
    assert [len(batch.messages) for batch in batches] == [BATCH_LINES, 3, 2]
    messages = [message for batch in batches for message in batch.messages]
    assert messages == [f"line {n}" for n in range(short)] + [long_line] * 4
    assert all(len("".join(batch.messages)) < BATCH_TEXT + len(long_line) for batch in batches)
    assert set(batches[0].task_ids) == {3}
    # One instance's lines: its id, the job's and the task name go once per batch, not per line.
    assert (batches[0].instance_id, batches[0].job_id, batches[0].task_name) == (2, 1, "t")
    assert not batches[0].instance_ids and not batches[0].job_ids and not batches[0].task_names
    assert shipper.buffered == 0


def test_a_batch_of_several_instances_or_task_names_sends_those_columns_per_line() -> None:
    shipper = LogShipper(lambda: None)
    one = JobContext(job_id=1, instance_id=2, task_id=3, task_name="a", execute_mode=ExecuteMode.GRID)
    two = JobContext(job_id=1, instance_id=4, task_id=5, task_name="b", execute_mode=ExecuteMode.GRID)
    for ctx in (one, two, one):
        shipper.write(ctx, logging.INFO, f"from {ctx.instance_id}")
    [batch] = shipper.drain()
    assert list(batch.instance_ids) == [2, 4, 2] and list(batch.task_names) == ["a", "b", "a"]
    assert batch.job_id == 1 and not batch.job_ids
    assert list(batch.messages) == ["from 2", "from 4", "from 2"]
