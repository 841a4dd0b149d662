"""The parts of a job definition: the frozen wire-model base and the option models a JobSpec holds
(:class:`Contact`, :class:`MapOptions`, :class:`MonitorOptions`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    ValidationError,
)

from sx.processors._schedule import to_definition_error
from sx.processors._spec_fields import WIRE_NAMES
from sx.processors._spec_limits import (
    MAX_ATTEMPTS,
    MAX_CONSUMER_SIZE,
    MAX_DISPATCHER_SIZE,
    MAX_INTERVAL,
    MAX_PAGE_SIZE,
    MAX_QUEUE_SIZE,
    MAX_TIMEOUT,
    at_most,
    check_alarm_url,
    check_ding,
)

__all__ = ["Contact", "MapOptions", "MonitorOptions", "WireModel"]


class WireModel(BaseModel):
    """Frozen, closed models whose construction errors are DefinitionErrors with wire field names."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    if not TYPE_CHECKING:
        # Only at run time: type checkers keep the field-derived signature of the pydantic plugin.
        def __init__(self, **data: Any) -> None:
            try:
                super().__init__(**data)
            except ValidationError as exc:
                raise to_definition_error(exc, WIRE_NAMES) from None


class Contact(WireModel):
    """Someone alarmed about a job (the OpenAPI's ``contactInfo`` item)."""

    user_phone: Annotated[StrictStr, Field(max_length=100)] = ""
    user_name: Annotated[StrictStr, Field(max_length=100)] = ""
    user_mail: Annotated[StrictStr, Field(max_length=254)] = ""
    ding: Annotated[StrictStr, Field(max_length=1000), AfterValidator(check_ding)] = ""
    """A DingTalk robot webhook URL; alarms reach it through the scheduler's apprise channel."""


class MapOptions(WireModel):
    """Advanced options of the map modes (parallel, grid, batch): the OpenAPI's ``mapTaskXAttrs``."""

    page_size: Annotated[StrictInt, Field(ge=1), at_most(MAX_PAGE_SIZE)] = 100
    """Subtasks pulled at a time."""
    consumer_size: Annotated[StrictInt, Field(ge=1), at_most(MAX_CONSUMER_SIZE)] = 5
    """Subtasks run at once on one worker for one trigger."""
    queue_size: Annotated[StrictInt, Field(ge=1), at_most(MAX_QUEUE_SIZE)] = 10_000
    """Upper bound of the subtask queue cache."""
    dispatcher_size: Annotated[StrictInt, Field(ge=1, le=MAX_DISPATCHER_SIZE)] = 5
    """Subtask dispatchers."""
    task_max_attempt: Annotated[StrictInt, Field(ge=0), at_most(MAX_ATTEMPTS)] = 0
    """Retries of a failed subtask."""
    task_attempt_interval: Annotated[StrictInt, Field(ge=0), at_most(MAX_INTERVAL)] = 0
    """Seconds between those retries."""


class MonitorOptions(WireModel):
    """Alarm settings: the OpenAPI's ``jobMonitorInfo`` (``monitorConfig`` and ``contactInfo``)."""

    timeout_enable: StrictBool = False
    """Alarm when an instance runs longer than ``timeout``."""
    timeout: Annotated[StrictInt, Field(ge=1), at_most(MAX_TIMEOUT)] = 7200
    """Seconds."""
    timeout_kill_enable: StrictBool = False
    """Stop an instance that runs longer than ``timeout``."""
    fail_enable: StrictBool = False
    """Alarm when an instance fails."""
    send_channel: Annotated[StrictStr, Field(min_length=1, max_length=50)] = "sms"
    alarm_url: Annotated[StrictStr, Field(max_length=2000), AfterValidator(check_alarm_url)] = ""
    """Where the ``apprise`` channel sends this job's alarms (apprise URLs, comma-separated) instead of
    the scheduler's ``alarm_apprise_url``; an extension of ours."""
    contacts: tuple[Contact, ...] = ()
    """Who is alarmed; empty: everyone with rights on the group."""
