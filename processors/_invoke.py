"""Calling one hook: on the loop or in a thread, with the current context set, always a ``ProcessResult``."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import functools
import inspect
import logging
from collections.abc import Callable
from typing import Any

from sx.processors._context import JobContext, _current
from sx.processors._errors import CancelledError
from sx.processors._result import KILLED, ProcessResult, describe_exception, to_result

__all__ = ["invoke"]

_log = logging.getLogger("sx.job")


def _is_async(hook: Callable[..., Any]) -> bool:
    """Whether a hook is ``async def``: asked per subtask in the map modes, where inspect's own check
    costs more than a no-op hook, so it is remembered per function (not per bound method: one is made
    per call)."""
    function = getattr(hook, "__func__", hook)
    try:
        return _is_async_function(function)
    except TypeError:  # an unhashable callable
        return inspect.iscoroutinefunction(hook)


@functools.lru_cache(maxsize=1024)
def _is_async_function(function: Callable[..., Any]) -> bool:
    return inspect.iscoroutinefunction(function)


async def invoke(
    hook: Callable[[JobContext], Any],
    ctx: JobContext,
    *,
    executor: concurrent.futures.Executor,
) -> ProcessResult:
    """Run ``hook(ctx)`` and return its outcome; never raises for the hook's own failures.

    ``async def`` hooks run on the running loop, plain ones in ``executor`` with a copy of the
    current contextvars. ``current_context()`` returns ``ctx`` inside the hook. An exception becomes
    FAILED ``"ExceptionType: message"`` (shortened to the result limit); ``ctx.check_cancelled()``
    raising, or this task being cancelled, becomes FAILED ``"killed"``. When the task is cancelled
    while a plain hook runs in a thread, the context is marked cancelled; the thread keeps running
    until the hook returns, since Python cannot stop it.
    """
    loop = asyncio.get_running_loop()
    if ctx.loop is None:
        ctx.loop = loop
    token = _current.set(ctx)
    try:
        if _is_async(hook):
            value = await hook(ctx)
        else:
            context = contextvars.copy_context()
            value = await loop.run_in_executor(executor, context.run, hook, ctx)
            if inspect.isawaitable(value):
                value = await value
        return to_result(value)
    except CancelledError:
        return ProcessResult.failure(KILLED)
    except asyncio.CancelledError:
        ctx.cancel()
        return ProcessResult.failure(KILLED)
    except Exception as exc:
        _log.debug("hook %s of %s failed", getattr(hook, "__qualname__", hook), ctx.job_name, exc_info=True)
        return ProcessResult.failure(describe_exception(exc))
    finally:
        _current.reset(token)
