"""The wire field table of a job definition: each OpenAPI field's name, where it lives in a JobSpec, and
how a raw value (a string from a query or form, or a JSON value) is read; plus how the fields group in
GetJobInfo's nested JobConfigInfo.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, Final

from sx.processors._errors import DefinitionError
from sx.processors._schedule import parse_time_type

__all__ = [
    "CONFIG_SECTIONS",
    "CONFIG_TOP",
    "FIELDS",
    "FIELDS_BY_WIRE",
    "MONITOR_CONFIG",
    "REQUIRED_FIELDS",
    "WIRE_NAMES",
    "WireField",
    "as_str",
]

_INT_TEXT = re.compile(r"\s*[+-]?[0-9]{1,30}\s*")  # ASCII digits only, as for ids


def as_str(wire: str, value: Any) -> Any:
    if isinstance(value, str):
        return value
    raise DefinitionError(wire, value, "must be a string")


def _as_int(wire: str, value: Any) -> Any:
    if isinstance(value, bool):
        raise DefinitionError(wire, value, "must be an integer")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and _INT_TEXT.fullmatch(value):
        return int(value)
    raise DefinitionError(wire, value, "must be an integer")


def _as_bool(wire: str, value: Any) -> Any:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        text = value.strip().lower()
        if text in ("true", "1"):
            return True
        if text in ("false", "0"):
            return False
    raise DefinitionError(wire, value, "must be true or false")


def _as_time_type(wire: str, value: Any) -> Any:
    return parse_time_type(value)


class WireField:
    """One flat wire field: its name, where it lives in a JobSpec, and how a raw value is read."""

    __slots__ = ("coerce", "path", "wire")

    def __init__(self, wire: str, path: tuple[str, ...], coerce: Callable[[str, Any], Any]) -> None:
        self.wire = wire
        self.path = path
        self.coerce = coerce


# In the order of the OpenAPI's CreateJob table; contactInfo is handled on its own.
FIELDS: Final = (
    WireField("jobType", ("job_type",), as_str),
    WireField("className", ("class_name",), as_str),
    WireField("jarUrl", ("jar_url",), as_str),
    WireField("content", ("content",), as_str),
    WireField("name", ("name",), as_str),
    WireField("description", ("description",), as_str),
    WireField("executeMode", ("execute_mode",), as_str),
    WireField("parameters", ("parameters",), as_str),
    WireField("maxConcurrency", ("max_concurrency",), _as_int),
    WireField("maxAttempt", ("max_attempt",), _as_int),
    WireField("attemptInterval", ("attempt_interval",), _as_int),
    WireField("timeType", ("schedule", "time_type"), _as_time_type),
    WireField("timeExpression", ("schedule", "expression"), as_str),
    WireField("calendar", ("calendar",), as_str),
    WireField("dataOffset", ("data_offset",), _as_int),
    WireField("pageSize", ("map", "page_size"), _as_int),
    WireField("consumerSize", ("map", "consumer_size"), _as_int),
    WireField("queueSize", ("map", "queue_size"), _as_int),
    WireField("dispatcherSize", ("map", "dispatcher_size"), _as_int),
    WireField("taskMaxAttempt", ("map", "task_max_attempt"), _as_int),
    WireField("taskAttemptInterval", ("map", "task_attempt_interval"), _as_int),
    WireField("timeoutEnable", ("monitor", "timeout_enable"), _as_bool),
    WireField("timeout", ("monitor", "timeout"), _as_int),
    WireField("timeoutKillEnable", ("monitor", "timeout_kill_enable"), _as_bool),
    WireField("failEnable", ("monitor", "fail_enable"), _as_bool),
    WireField("sendChannel", ("monitor", "send_channel"), as_str),
    WireField("alarmUrl", ("monitor", "alarm_url"), as_str),
    WireField("timeZone", ("time_zone",), as_str),
    WireField("misfirePolicy", ("misfire",), as_str),
    WireField("captureLogs", ("capture_logs",), _as_bool),
)
FIELDS_BY_WIRE: Final = {spec.wire: spec for spec in FIELDS}
REQUIRED_FIELDS: Final = ("name", "jobType", "timeType")

# Attribute name -> wire name, for restating pydantic errors (see to_definition_error).
WIRE_NAMES: Final = {
    **{spec.path[-1]: spec.wire for spec in FIELDS},
    "contacts": "contactInfo",
    "user_phone": "contactInfo.userPhone",
    "user_name": "contactInfo.userName",
    "user_mail": "contactInfo.userMail",
    "ding": "contactInfo.ding",
}

CONFIG_TOP: Final = (
    "jobType",
    "className",
    "jarUrl",
    "content",
    "name",
    "description",
    "executeMode",
    "parameters",
    "maxConcurrency",
    "maxAttempt",
    "attemptInterval",
    "timeZone",
    "misfirePolicy",
    "captureLogs",
)
CONFIG_SECTIONS: Final = {
    "mapTaskXAttrs": (
        "pageSize",
        "consumerSize",
        "queueSize",
        "dispatcherSize",
        "taskMaxAttempt",
        "taskAttemptInterval",
    ),
    "timeConfig": ("timeType", "timeExpression", "calendar", "dataOffset"),
}
MONITOR_CONFIG: Final = (
    "timeoutEnable",
    "timeout",
    "timeoutKillEnable",
    "failEnable",
    "sendChannel",
    "alarmUrl",
)
