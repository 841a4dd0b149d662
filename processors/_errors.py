"""The exceptions of sx-worker, under one root.

SxError
├── DefinitionError      a job definition or processor class is invalid (names the field and value)
│   └── CronError        a cron expression is invalid (names the cron field and value)
├── RegistryError        a processor name is taken, or a processor is unknown
├── PayloadError         a subtask payload cannot be encoded, or is over the size limit
├── ResultTooLargeError  a processor's result is over the result size limit
├── CancelledError       raised inside a processor by ``ctx.check_cancelled()`` once it was stopped
└── (elsewhere) AlarmDeliveryError, ServiceError, OpenApiError, WorkerRejected, SchedulerStartError
"""

from __future__ import annotations

__all__ = [
    "CancelledError",
    "CronError",
    "DefinitionError",
    "PayloadError",
    "RegistryError",
    "ResultTooLargeError",
    "SxError",
]


class SxError(Exception):
    """Root of every error sx-worker raises on purpose."""


class DefinitionError(SxError, ValueError):
    """An invalid job definition: ``field`` is the wire (camelCase) name, ``value`` what was given."""

    def __init__(self, field: str, value: object, message: str) -> None:
        self.field = field
        self.value = value
        self.message = message
        super().__init__(f"{field}={value!r}: {message}")


class CronError(DefinitionError):
    """An invalid cron expression; ``cron_field`` names the part (seconds, minutes, ..., year)."""

    def __init__(self, expression: str, cron_field: str, message: str) -> None:
        self.cron_field = cron_field
        self.expression = expression
        super().__init__("timeExpression", expression, f"{cron_field}: {message}")


class RegistryError(SxError):
    """A duplicate or unknown processor name."""


class PayloadError(SxError, ValueError):
    """A subtask payload that cannot be encoded or is over the limit."""


class ResultTooLargeError(SxError, ValueError):
    """A processor result over the documented limit; results are never silently cut."""


class CancelledError(SxError):
    """The instance was stopped; raised by ``ctx.check_cancelled()`` in blocking processors."""
