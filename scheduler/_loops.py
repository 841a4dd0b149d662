"""The background loops of the scheduler's parts (trigger engine, timeout watcher, workflow fire loop).

A ``Loop`` is one asyncio task running a part's ``cycle`` again and again. Starting is idempotent,
stopping cancels the task and waits for it. ``wakeup`` is cleared before every cycle, so a cycle that
sleeps with ``clock.sleep_until(when, loop.wakeup)`` returns early when someone calls ``wake()``. A
cycle that raises is logged and the next one waits ``error_backoff`` first (or until woken), so one
fault never ends the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import timedelta

from sx.scheduler._clock import Clock

__all__ = ["Loop"]


class Loop:
    """One background task: ``cycle`` in a loop, named ``name`` (the task's name)."""

    def __init__(
        self,
        name: str,
        cycle: Callable[[], Awaitable[None]],
        *,
        clock: Clock,
        logger: logging.Logger,
        failure: str,
        error_backoff: timedelta,
    ) -> None:
        self.name = name
        self.wakeup = asyncio.Event()
        """Set by ``wake()``; cleared before each cycle. Sleep on it to be woken."""
        self._cycle = cycle
        self._clock = clock
        self._logger = logger
        self._failure = failure
        self._error_backoff = error_backoff
        self._task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def wake(self) -> None:
        """Cut the current sleep short: the next cycle starts now."""
        self.wakeup.set()

    def start(self) -> None:
        """Start the task (idempotent)."""
        if self.running:
            return
        self.wakeup.clear()
        self._task = asyncio.create_task(self._run(), name=self.name)

    async def stop(self) -> None:
        """Cancel the task and wait for it to end; harmless when it is not running."""
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def _run(self) -> None:
        while True:
            self.wakeup.clear()
            try:
                await self._cycle()
            except asyncio.CancelledError:
                raise
            except Exception:
                self._logger.exception(self._failure)
                await self._clock.sleep_until(self._clock.now() + self._error_backoff, self.wakeup)
