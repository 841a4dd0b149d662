"""Bounded stop steps: a part that does not stop in time is logged with every task's stack, then left.

A scheduler that is told to stop must end: on PostgreSQL its groups stay with it until it gives their
leases up, so one part hanging in its stop (a cancelled database call that never returns, say) would
hold every group it owns. Each step gets ``warn_after`` seconds before the stacks of all tasks are
logged (what the hung step waits on is among them), and ``give_up_after`` before the step is abandoned
and the stop goes on with the next part.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import traceback
from collections.abc import Awaitable
from types import CoroutineType, FrameType, GeneratorType
from typing import Any

__all__ = ["bounded_step", "task_stacks"]


def _awaited_frames(awaitable: Any) -> list[FrameType]:
    """The frames of a suspended coroutine and of everything it awaits, outermost first."""
    frames: list[FrameType] = []
    seen = 0
    while awaitable is not None and seen < 200:  # bounded: a cycle must not hang a diagnostic
        seen += 1
        if isinstance(awaitable, CoroutineType):
            frame, awaitable = awaitable.cr_frame, awaitable.cr_await
        elif isinstance(awaitable, GeneratorType):
            frame, awaitable = awaitable.gi_frame, awaitable.gi_yieldfrom
        else:
            # An async generator's asend, a future or another awaitable: its own frame, if any.
            frame = getattr(awaitable, "ag_frame", None)
            awaitable = getattr(awaitable, "ag_await", None)
        if frame is not None:
            frames.append(frame)
    return frames


def task_stacks() -> str:
    """Every task of the running loop with the stack it is suspended in, innermost line last."""
    parts = []
    for task in sorted(asyncio.all_tasks(), key=lambda t: t.get_name()):
        frames = _awaited_frames(task.get_coro())
        summary = traceback.StackSummary.extract((frame, frame.f_lineno) for frame in frames)
        parts.append(f"task {task.get_name()!r}:\n{''.join(summary.format())}")
    return "\n".join(parts)


async def bounded_step(
    name: str,
    step: Awaitable[None],
    *,
    logger: logging.Logger,
    warn_after: float,
    give_up_after: float,
) -> bool:
    """Await ``step`` (a part's stop); True when it ended (or raised, which is logged), False when it
    was abandoned after ``give_up_after`` seconds. Its stacks are logged after ``warn_after``."""
    task = asyncio.ensure_future(step)
    started = time.monotonic()
    done, _ = await asyncio.wait([task], timeout=warn_after)
    if not done:
        logger.warning("stopping %s takes over %.0f s; the tasks now:\n%s", name, warn_after, task_stacks())
        done, _ = await asyncio.wait([task], timeout=max(0.0, give_up_after - (time.monotonic() - started)))
    if not done:
        logger.error("stopping %s did not end in %.0f s: going on without it", name, give_up_after)
        task.cancel()
        return False
    with contextlib.suppress(asyncio.CancelledError):
        error = task.exception()
        if error is not None:
            logger.error("stopping %s failed", name, exc_info=error)
    return True
