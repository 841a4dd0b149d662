"""Crash points: the steps at which the end-to-end tests kill the scheduler on purpose.

With ``SX_CRASH_AT=<point>[:<n>]`` in its environment, a scheduler process SIGKILLs itself the ``n``-th
time (default: the first) it passes ``crash_point("<point>")``. The tests use it to cut a dispatch pass
at an exact step and check that the restarted scheduler runs nothing twice and strands nothing. Unset,
as it always is outside those tests, a crash point costs one comparison.

The points: ``dispatch.assigned`` (a pass chose its workers, nothing written or sent),
``dispatch.recorded`` (the pass's READY write is committed, nothing sent), ``dispatch.sent`` (after one
submission was queued for its worker; ``:n`` cuts the pass after its n-th), ``dispatch.report`` (a
worker's report arrived, not yet applied: the worker has the instance, the store says READY).
"""

from __future__ import annotations

import functools
import logging
import os
import signal

__all__ = ["CRASH_AT_ENV", "crash_point"]

CRASH_AT_ENV = "SX_CRASH_AT"

log = logging.getLogger("sx.scheduler")

_passed: dict[str, int] = {}


@functools.cache
def _target() -> tuple[str, int] | None:
    """The point and count named by ``SX_CRASH_AT``, read on first use (never at import)."""
    value = os.environ.get(CRASH_AT_ENV, "").strip()
    if not value:
        return None
    point, _, count = value.partition(":")
    return point, int(count) if count else 1


def crash_point(point: str) -> None:
    """SIGKILL this process if ``SX_CRASH_AT`` names ``point`` and this is its n-th pass."""
    target = _target()
    if target is None or target[0] != point:
        return
    _passed[point] = _passed.get(point, 0) + 1
    if _passed[point] >= target[1]:
        log.critical("crash point %s reached (%s): killing the scheduler", point, CRASH_AT_ENV)
        logging.shutdown()
        os.kill(os.getpid(), signal.SIGKILL)
