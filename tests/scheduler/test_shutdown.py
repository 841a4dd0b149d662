"""Bounded stop steps: a hung part is logged with the stack it waits in, then left behind."""

from __future__ import annotations

import asyncio
import logging

import pytest

from sx.scheduler._shutdown import bounded_step, task_stacks

log = logging.getLogger("test.shutdown")


async def _parked_in_a_helper(event: asyncio.Event) -> None:
    await event.wait()


async def _stop_that_hangs(event: asyncio.Event, cancelled: list[bool]) -> None:
    try:
        await _parked_in_a_helper(event)
    except asyncio.CancelledError:
        cancelled.append(True)
        raise


async def test_a_step_that_ends_returns_true() -> None:
    ran: list[str] = []

    async def stop() -> None:
        await asyncio.sleep(0)
        ran.append("stopped")

    assert await bounded_step("the part", stop(), logger=log, warn_after=5, give_up_after=10)
    assert ran == ["stopped"]


async def test_a_step_that_raises_is_logged_and_the_stop_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    async def stop() -> None:
        raise RuntimeError("the part broke")

    with caplog.at_level(logging.ERROR, logger=log.name):
        assert await bounded_step("the part", stop(), logger=log, warn_after=5, give_up_after=10)
    assert "stopping the part failed" in caplog.text
    assert "the part broke" in caplog.text


async def test_a_hung_step_is_logged_with_its_inner_stack_then_abandoned(
    caplog: pytest.LogCaptureFixture,
) -> None:
    never, cancelled = asyncio.Event(), list[bool]()
    with caplog.at_level(logging.WARNING, logger=log.name):
        ended = await bounded_step(
            "the part", _stop_that_hangs(never, cancelled), logger=log, warn_after=0.05, give_up_after=0.1
        )
    assert ended is False
    warning, error = (r for r in caplog.records if r.name == log.name)
    # The stack reaches the innermost await, not only the task's outer coroutine.
    assert "_stop_that_hangs" in warning.getMessage()
    assert "_parked_in_a_helper" in warning.getMessage()
    assert "did not end" in error.getMessage()
    for _ in range(100):  # the cancellation reaches the task at its next step
        if cancelled:
            break
        await asyncio.sleep(0)
    assert cancelled == [True]


async def test_task_stacks_names_every_task() -> None:
    never = asyncio.Event()
    task = asyncio.create_task(_parked_in_a_helper(never), name="parked-task")
    await asyncio.sleep(0)
    try:
        stacks = task_stacks()
    finally:
        task.cancel()
    assert "task 'parked-task'" in stacks
    assert "_parked_in_a_helper" in stacks
