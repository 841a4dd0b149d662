"""The limits of a job definition's values and the checks of single values against them.

Upper bounds added after definitions were stored must not make those definitions unreadable, so the
bounds that may grow (:func:`at_most`) are skipped while :func:`stored_definitions` is active.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Final

from pydantic import AfterValidator

from sx.processors._errors import DefinitionError

__all__ = [
    "MAX_ATTEMPTS",
    "MAX_CALENDAR_CHARS",
    "MAX_CLASS_NAME_CHARS",
    "MAX_CONCURRENCY",
    "MAX_CONSUMER_SIZE",
    "MAX_CONTENT_BYTES",
    "MAX_DATA_OFFSET",
    "MAX_DESCRIPTION_CHARS",
    "MAX_DISPATCHER_SIZE",
    "MAX_INTERVAL",
    "MAX_NAME_CHARS",
    "MAX_PAGE_SIZE",
    "MAX_PARAMETERS_BYTES",
    "MAX_QUEUE_SIZE",
    "MAX_TIMEOUT",
    "at_most",
    "check_alarm_url",
    "check_bytes",
    "check_ding",
    "preview",
    "stored_definitions",
]

MAX_NAME_CHARS: Final = 100
MAX_DESCRIPTION_CHARS: Final = 1_000
MAX_CLASS_NAME_CHARS: Final = 1_000
MAX_CONTENT_BYTES: Final = 1_000_000
MAX_PARAMETERS_BYTES: Final = 10_000
MAX_CALENDAR_CHARS: Final = 100
MAX_DATA_OFFSET: Final = 10 * 366 * 24 * 3600
MAX_DISPATCHER_SIZE: Final = 200
MAX_CONCURRENCY: Final = 1_000_000
MAX_ATTEMPTS: Final = 100
"""Retries of an instance (``maxAttempt``) or of a subtask (``taskMaxAttempt``)."""
MAX_INTERVAL: Final = 30 * 24 * 3600
"""Seconds between retries (``attemptInterval``, ``taskAttemptInterval``): 30 days."""
MAX_TIMEOUT: Final = 365 * 24 * 3600
"""Seconds an instance may run before its timeout alarm or kill: a year."""
MAX_PAGE_SIZE: Final = 10_000
MAX_CONSUMER_SIZE: Final = 1_000
MAX_QUEUE_SIZE: Final = 10_000_000

_reading_stored: ContextVar[bool] = ContextVar("sx_reading_stored_definitions", default=False)


@contextmanager
def stored_definitions() -> Iterator[None]:
    """Validate definitions read back from the store: upper bounds added after they were written do not
    apply to them, so whatever was stored can always be read back and listed."""
    token = _reading_stored.set(True)
    try:
        yield
    finally:
        _reading_stored.reset(token)


def at_most(limit: int) -> AfterValidator:
    """An upper bound checked on new definitions, not on stored ones (see ``stored_definitions``)."""

    def check(value: int) -> int:
        if value > limit and not _reading_stored.get():
            raise ValueError(f"must be at most {limit}")
        return value

    return AfterValidator(check)


def check_ding(value: str) -> str:
    if value and not value.startswith(("http://", "https://")):
        raise ValueError(
            "must be a DingTalk robot URL (https://oapi.dingtalk.com/robot/send?access_token=...)"
        )
    return value


def check_alarm_url(value: str) -> str:
    for url in filter(None, (part.strip() for part in re.split(r"[,\s]+", value))):
        if "://" not in url:
            raise ValueError(f"{url[:40]!r} is not an apprise URL (scheme://..., e.g. json://host/path)")
    return value


def check_bytes(wire: str, value: str, limit: int) -> None:
    size = len(value.encode("utf-8", errors="surrogatepass"))
    if size > limit:
        raise DefinitionError(wire, preview(value), f"is {size} bytes in UTF-8; at most {limit} are allowed")


def preview(value: str) -> str:
    """A long value shortened for an error message."""
    return value if len(value) <= 60 else value[:57] + "..."
