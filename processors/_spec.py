"""Job definitions (:class:`JobSpec`) and their OpenAPI wire forms.

A JobSpec is what the job OpenAPI's CreateJob takes and GetJobInfo returns, as frozen pydantic models
with snake_case attributes. Two wire forms exist:

- the flat CreateJob/UpdateJob parameters (:meth:`JobSpec.to_create_params`,
  :meth:`JobSpec.from_create_params`, :meth:`JobSpec.updated`), whose values may arrive as strings
  (query string, form) or JSON types;
- GetJobInfo's nested JobConfigInfo (:meth:`JobSpec.to_job_config_info`,
  :meth:`JobSpec.from_job_config_info`).

Both use the original OpenAPI's field names, plus three extensions of ours: ``timeZone`` (an IANA zone;
empty means the scheduler's default zone), ``misfirePolicy`` (``run_once`` or ``skip``) and
``captureLogs`` (ship plain logging and print inside the hooks to the instance's online log).

Every invalid value raises :class:`~sx.processors._errors.DefinitionError` naming the wire field, also
when a model is constructed directly. Limits where the OpenAPI names none are ours:

=====================  ====================================================================
name                   1 to 100 characters, no control characters, no surrounding blanks
description            at most 1,000 characters
className, jarUrl      at most 1,000 characters; jarUrl for java jobs only
content                at most 1,000,000 bytes UTF-8
parameters             at most 10,000 bytes UTF-8 (the original's limit)
calendar               at most 100 characters, cron only
dataOffset             -10 to +10 years in seconds, non-zero only with cron
sendChannel            1 to 50 characters
alarmUrl               at most 2,000 characters: apprise URLs (``scheme://...``), comma-separated
userPhone, userName    at most 100 characters each; userMail at most 254
ding                   a DingTalk robot URL (http:// or https://), at most 1,000 characters
=====================  ====================================================================

A job's type decides where its code comes from: java needs ``className``; python needs exactly one of
``className`` (a registered processor) and ``content`` (a script); shell and go are scripts and need
``content`` (and take no ``className``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING, Annotated, Any, Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    ValidationError,
    field_validator,
    model_validator,
)

from sx.processors._enums import ExecuteMode, JobType, MisfirePolicy, TimeType
from sx.processors._errors import DefinitionError
from sx.processors._schedule import Schedule, api, parse_time_type, to_definition_error

__all__ = [
    "MAX_ATTEMPTS",
    "MAX_CONCURRENCY",
    "MAX_CONSUMER_SIZE",
    "MAX_CONTENT_BYTES",
    "MAX_DATA_OFFSET",
    "MAX_INTERVAL",
    "MAX_PAGE_SIZE",
    "MAX_PARAMETERS_BYTES",
    "MAX_QUEUE_SIZE",
    "MAX_TIMEOUT",
    "Contact",
    "JobSpec",
    "MapOptions",
    "MonitorOptions",
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


def _at_most(limit: int) -> AfterValidator:
    """An upper bound checked on new definitions, not on stored ones (see ``stored_definitions``)."""

    def check(value: int) -> int:
        if value > limit and not _reading_stored.get():
            raise ValueError(f"must be at most {limit}")
        return value

    return AfterValidator(check)


def _check_ding(value: str) -> str:
    if value and not value.startswith(("http://", "https://")):
        raise ValueError(
            "must be a DingTalk robot URL (https://oapi.dingtalk.com/robot/send?access_token=...)"
        )
    return value


def _check_alarm_url(value: str) -> str:
    for url in filter(None, (part.strip() for part in re.split(r"[,\s]+", value))):
        if "://" not in url:
            raise ValueError(f"{url[:40]!r} is not an apprise URL (scheme://..., e.g. json://host/path)")
    return value


_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_INT_TEXT = re.compile(r"\s*[+-]?[0-9]{1,30}\s*")  # ASCII digits only, as for ids
_FLAT_CONTACT = re.compile(r"contactInfo(?:\.(\d+)|\[(\d+)\])\.(\w+)")
_CONTACT_KEYS = {"userPhone": "user_phone", "userName": "user_name", "userMail": "user_mail", "ding": "ding"}
_JOB_TYPE_ALIASES = {"golang": JobType.GO}


class _WireModel(BaseModel):
    """Frozen, closed models whose construction errors are DefinitionErrors with wire field names."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    if not TYPE_CHECKING:
        # Only at run time: type checkers keep the field-derived signature of the pydantic plugin.
        def __init__(self, **data: Any) -> None:
            try:
                super().__init__(**data)
            except ValidationError as exc:
                raise to_definition_error(exc, _WIRE_NAMES) from None


class Contact(_WireModel):
    """Someone alarmed about a job (the OpenAPI's ``contactInfo`` item)."""

    user_phone: Annotated[StrictStr, Field(max_length=100)] = ""
    user_name: Annotated[StrictStr, Field(max_length=100)] = ""
    user_mail: Annotated[StrictStr, Field(max_length=254)] = ""
    ding: Annotated[StrictStr, Field(max_length=1000), AfterValidator(_check_ding)] = ""
    """A DingTalk robot webhook URL; alarms reach it through the scheduler's apprise channel."""


class MapOptions(_WireModel):
    """Advanced options of the map modes (parallel, grid, batch): the OpenAPI's ``mapTaskXAttrs``."""

    page_size: Annotated[StrictInt, Field(ge=1), _at_most(MAX_PAGE_SIZE)] = 100
    """Subtasks pulled at a time."""
    consumer_size: Annotated[StrictInt, Field(ge=1), _at_most(MAX_CONSUMER_SIZE)] = 5
    """Subtasks run at once on one worker for one trigger."""
    queue_size: Annotated[StrictInt, Field(ge=1), _at_most(MAX_QUEUE_SIZE)] = 10_000
    """Upper bound of the subtask queue cache."""
    dispatcher_size: Annotated[StrictInt, Field(ge=1, le=MAX_DISPATCHER_SIZE)] = 5
    """Subtask dispatchers."""
    task_max_attempt: Annotated[StrictInt, Field(ge=0), _at_most(MAX_ATTEMPTS)] = 0
    """Retries of a failed subtask."""
    task_attempt_interval: Annotated[StrictInt, Field(ge=0), _at_most(MAX_INTERVAL)] = 0
    """Seconds between those retries."""


class MonitorOptions(_WireModel):
    """Alarm settings: the OpenAPI's ``jobMonitorInfo`` (``monitorConfig`` and ``contactInfo``)."""

    timeout_enable: StrictBool = False
    """Alarm when an instance runs longer than ``timeout``."""
    timeout: Annotated[StrictInt, Field(ge=1), _at_most(MAX_TIMEOUT)] = 7200
    """Seconds."""
    timeout_kill_enable: StrictBool = False
    """Stop an instance that runs longer than ``timeout``."""
    fail_enable: StrictBool = False
    """Alarm when an instance fails."""
    send_channel: Annotated[StrictStr, Field(min_length=1, max_length=50)] = "sms"
    alarm_url: Annotated[StrictStr, Field(max_length=2000), AfterValidator(_check_alarm_url)] = ""
    """Where the ``apprise`` channel sends this job's alarms (apprise URLs, comma-separated) instead of
    the scheduler's ``alarm_apprise_url``; an extension of ours."""
    contacts: tuple[Contact, ...] = ()
    """Who is alarmed; empty: everyone with rights on the group."""


class JobSpec(_WireModel):
    """A job definition: everything CreateJob takes (without namespace, groupId and jobId)."""

    name: Annotated[StrictStr, Field(min_length=1, max_length=MAX_NAME_CHARS)]
    description: Annotated[StrictStr, Field(max_length=MAX_DESCRIPTION_CHARS)] = ""
    job_type: JobType = JobType.PYTHON
    class_name: Annotated[StrictStr, Field(max_length=MAX_CLASS_NAME_CHARS)] = ""
    """python: the registered processor's name; java: the processor class's full name."""
    content: StrictStr = ""
    """Script code of python, shell and go script jobs."""
    jar_url: Annotated[StrictStr, Field(max_length=MAX_CLASS_NAME_CHARS)] = ""
    execute_mode: ExecuteMode = ExecuteMode.STANDALONE
    parameters: StrictStr = ""
    """Job parameters the processor reads at run time."""
    max_concurrency: Annotated[StrictInt, Field(ge=1), _at_most(MAX_CONCURRENCY)] = 1
    max_attempt: Annotated[StrictInt, Field(ge=0), _at_most(MAX_ATTEMPTS)] = 0
    attempt_interval: Annotated[StrictInt, Field(ge=0), _at_most(MAX_INTERVAL)] = 30
    """Seconds between retries of a failed instance."""
    schedule: Schedule = api()
    calendar: Annotated[StrictStr, Field(max_length=MAX_CALENDAR_CHARS)] = ""
    data_offset: Annotated[StrictInt, Field(ge=-MAX_DATA_OFFSET, le=MAX_DATA_OFFSET)] = 0
    """Seconds: an instance's data time is its schedule time shifted by this much."""
    time_zone: StrictStr = ""
    """IANA zone the schedule is read in; empty: the scheduler's default zone."""
    misfire: MisfirePolicy = MisfirePolicy.RUN_ONCE
    capture_logs: StrictBool = False
    """Ship plain ``logging`` calls and ``print`` inside the processor's hooks to the instance's online
    log too (``ctx.logger`` lines and script output always are)."""
    map: MapOptions = MapOptions()
    monitor: MonitorOptions = MonitorOptions()

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        if _CONTROL_CHARS.search(value):
            raise DefinitionError("name", value, "must not contain control characters")
        if value != value.strip():
            raise DefinitionError("name", value, "must not start or end with blanks")
        return value

    @field_validator("job_type", mode="before")
    @classmethod
    def _parse_job_type(cls, value: Any) -> Any:
        if isinstance(value, str) and not isinstance(value, JobType):
            text = value.strip().lower()
            if text in _JOB_TYPE_ALIASES:
                return _JOB_TYPE_ALIASES[text]
            try:
                return JobType(text)
            except ValueError:
                raise DefinitionError("jobType", value, "must be one of java, python, shell, go") from None
        return value

    @field_validator("execute_mode", mode="before")
    @classmethod
    def _parse_execute_mode(cls, value: Any) -> Any:
        if isinstance(value, str) and not isinstance(value, ExecuteMode):
            try:
                return ExecuteMode.parse(value)
            except ValueError:
                raise DefinitionError(
                    "executeMode",
                    value,
                    "must be one of standalone, broadcast (or broadcatst), parallel, grid, batch",
                ) from None
        return value

    @field_validator("misfire", mode="before")
    @classmethod
    def _parse_misfire(cls, value: Any) -> Any:
        if isinstance(value, str) and not isinstance(value, MisfirePolicy):
            try:
                return MisfirePolicy(value.strip().lower())
            except ValueError:
                raise DefinitionError("misfirePolicy", value, "must be run_once or skip") from None
        return value

    @field_validator("content")
    @classmethod
    def _check_content(cls, value: str) -> str:
        _check_bytes("content", value, MAX_CONTENT_BYTES)
        return value

    @field_validator("parameters")
    @classmethod
    def _check_parameters(cls, value: str) -> str:
        _check_bytes("parameters", value, MAX_PARAMETERS_BYTES)
        return value

    @field_validator("time_zone")
    @classmethod
    def _check_time_zone(cls, value: str) -> str:
        if value:
            try:
                ZoneInfo(value)
            except (ZoneInfoNotFoundError, ValueError, OSError):
                raise DefinitionError("timeZone", value, "is not a known IANA time zone") from None
        return value

    @model_validator(mode="after")
    def _check_consistency(self) -> JobSpec:
        kind = self.job_type
        if kind is JobType.JAVA and not self.class_name:
            raise DefinitionError("className", self.class_name, "a java job needs the processor class's name")
        if kind is JobType.PYTHON:
            if not self.class_name and not self.content:
                raise DefinitionError(
                    "className",
                    self.class_name,
                    "a python job needs className (a processor) or content (a script)",
                )
            if self.class_name and self.content:
                raise DefinitionError(
                    "content", _preview(self.content), "give a python job className or content, not both"
                )
        if kind in (JobType.SHELL, JobType.GO):
            if not self.content:
                raise DefinitionError(
                    "content", self.content, f"a {kind.value} job needs its script as content"
                )
            if self.class_name:
                raise DefinitionError("className", self.class_name, f"a {kind.value} job takes no className")
        if self.jar_url and kind is not JobType.JAVA:
            raise DefinitionError("jarUrl", self.jar_url, "only java jobs take a jarUrl")
        if self.schedule.time_type is not TimeType.CRON:
            if self.calendar:
                raise DefinitionError("calendar", self.calendar, "only cron schedules take a calendar")
            if self.data_offset:
                raise DefinitionError("dataOffset", self.data_offset, "only cron schedules take a dataOffset")
        return self

    # -- wire forms ------------------------------------------------------------------------------

    def to_create_params(self) -> dict[str, Any]:
        """The CreateJob/UpdateJob parameters of this job, camelCase, with JSON values."""
        params: dict[str, Any] = {}
        for spec in _FIELDS:
            params[spec.wire] = _wire_value(_get(self, spec.path))
        params["contactInfo"] = [_contact_to_wire(c) for c in self.monitor.contacts]
        return params

    @classmethod
    def from_create_params(cls, params: Mapping[str, Any]) -> JobSpec:
        """Read CreateJob parameters; absent optional fields take the OpenAPI's defaults.

        Values may be strings (``"30"``, ``"true"``) or JSON types; ``contactInfo`` may be a list of
        objects, a JSON string or flattened (``contactInfo.1.userPhone=...``). Parameters that are no
        job field (namespace, groupId, jobId, ...) are ignored. A JSON null counts as absent.
        """
        values = _read_params(params)
        missing = [wire for wire in _REQUIRED if wire not in values]
        if missing:
            raise DefinitionError(missing[0], None, f"is required (missing: {', '.join(missing)})")
        return cls._from_values(values)

    def updated(self, params: Mapping[str, Any]) -> JobSpec:
        """This job with the fields ``params`` gives changed (UpdateJob); absent fields keep their value.

        When ``timeType`` changes, the fields bound to the old type (``timeExpression``, ``calendar``,
        ``dataOffset``) return to their defaults unless ``params`` gives them too.
        """
        changes = _read_params(params)
        values = _read_params(self.to_create_params())
        if "timeType" in changes and changes["timeType"] != self.schedule.time_type:
            for wire in ("timeExpression", "calendar", "dataOffset"):
                values.pop(wire, None)
        values.update(changes)
        return self._from_values(values)

    def to_job_config_info(self) -> dict[str, Any]:
        """GetJobInfo's ``data`` for this job (JobConfigInfo), without ``status`` and ``jobId``."""
        flat = self.to_create_params()
        info: dict[str, Any] = {wire: flat[wire] for wire in _CONFIG_TOP}
        for section, wires in _CONFIG_SECTIONS.items():
            info[section] = {wire: flat[wire] for wire in wires}
        info["jobMonitorInfo"] = {
            "monitorConfig": {wire: flat[wire] for wire in _MONITOR_CONFIG},
            "contactInfo": flat["contactInfo"],
        }
        return info

    @classmethod
    def from_job_config_info(cls, data: Mapping[str, Any]) -> JobSpec:
        """Read a JobConfigInfo as :meth:`to_job_config_info` writes it (``status``, ``jobId`` ignored)."""
        flat: dict[str, Any] = {wire: data[wire] for wire in _CONFIG_TOP if wire in data}
        for section, wires in _CONFIG_SECTIONS.items():
            body = _section(data, section)
            flat.update({wire: body[wire] for wire in wires if wire in body})
        monitor_info = _section(data, "jobMonitorInfo")
        monitor_config = _section(monitor_info, "monitorConfig", "jobMonitorInfo.")
        flat.update({wire: monitor_config[wire] for wire in _MONITOR_CONFIG if wire in monitor_config})
        if "contactInfo" in monitor_info:
            flat["contactInfo"] = monitor_info["contactInfo"]
        return cls.from_create_params(flat)

    def diff(self, other: JobSpec) -> dict[str, tuple[Any, Any]]:
        """The wire fields whose values differ, each mapped to (this job's value, ``other``'s value).

        A change of ``timeType`` also lists the fields bound to it, even if equal, because
        :meth:`updated` resets them when the type changes: the diff alone is always a complete update.
        """
        mine, theirs = self.to_create_params(), other.to_create_params()
        bound = ("timeExpression", "calendar", "dataOffset") if mine["timeType"] != theirs["timeType"] else ()
        return {
            wire: (mine[wire], theirs[wire]) for wire in mine if mine[wire] != theirs[wire] or wire in bound
        }

    @classmethod
    def _from_values(cls, values: Mapping[str, Any]) -> JobSpec:
        """Validate coerced wire values (wire name -> value) into a JobSpec."""
        data: dict[str, Any] = {}
        for spec in _FIELDS:
            if spec.wire in values:
                _put(data, spec.path, values[spec.wire])
        if "contactInfo" in values:
            _put(data, ("monitor", "contacts"), values["contactInfo"])
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise to_definition_error(exc, _WIRE_NAMES) from None


# -- the wire field table --------------------------------------------------------------------------


def _as_str(wire: str, value: Any) -> Any:
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


class _Field:
    """One flat wire field: its name, where it lives in a JobSpec, and how a raw value is read."""

    __slots__ = ("coerce", "path", "wire")

    def __init__(self, wire: str, path: tuple[str, ...], coerce: Callable[[str, Any], Any]) -> None:
        self.wire = wire
        self.path = path
        self.coerce = coerce


# In the order of the OpenAPI's CreateJob table; contactInfo is handled on its own.
_FIELDS: Final = (
    _Field("jobType", ("job_type",), _as_str),
    _Field("className", ("class_name",), _as_str),
    _Field("jarUrl", ("jar_url",), _as_str),
    _Field("content", ("content",), _as_str),
    _Field("name", ("name",), _as_str),
    _Field("description", ("description",), _as_str),
    _Field("executeMode", ("execute_mode",), _as_str),
    _Field("parameters", ("parameters",), _as_str),
    _Field("maxConcurrency", ("max_concurrency",), _as_int),
    _Field("maxAttempt", ("max_attempt",), _as_int),
    _Field("attemptInterval", ("attempt_interval",), _as_int),
    _Field("timeType", ("schedule", "time_type"), _as_time_type),
    _Field("timeExpression", ("schedule", "expression"), _as_str),
    _Field("calendar", ("calendar",), _as_str),
    _Field("dataOffset", ("data_offset",), _as_int),
    _Field("pageSize", ("map", "page_size"), _as_int),
    _Field("consumerSize", ("map", "consumer_size"), _as_int),
    _Field("queueSize", ("map", "queue_size"), _as_int),
    _Field("dispatcherSize", ("map", "dispatcher_size"), _as_int),
    _Field("taskMaxAttempt", ("map", "task_max_attempt"), _as_int),
    _Field("taskAttemptInterval", ("map", "task_attempt_interval"), _as_int),
    _Field("timeoutEnable", ("monitor", "timeout_enable"), _as_bool),
    _Field("timeout", ("monitor", "timeout"), _as_int),
    _Field("timeoutKillEnable", ("monitor", "timeout_kill_enable"), _as_bool),
    _Field("failEnable", ("monitor", "fail_enable"), _as_bool),
    _Field("sendChannel", ("monitor", "send_channel"), _as_str),
    _Field("alarmUrl", ("monitor", "alarm_url"), _as_str),
    _Field("timeZone", ("time_zone",), _as_str),
    _Field("misfirePolicy", ("misfire",), _as_str),
    _Field("captureLogs", ("capture_logs",), _as_bool),
)
_BY_WIRE: Final = {spec.wire: spec for spec in _FIELDS}
_REQUIRED: Final = ("name", "jobType", "timeType")

# Attribute name -> wire name, for restating pydantic errors (see to_definition_error).
_WIRE_NAMES: Final = {
    **{spec.path[-1]: spec.wire for spec in _FIELDS},
    "contacts": "contactInfo",
    "user_phone": "contactInfo.userPhone",
    "user_name": "contactInfo.userName",
    "user_mail": "contactInfo.userMail",
    "ding": "contactInfo.ding",
}

_CONFIG_TOP: Final = (
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
_CONFIG_SECTIONS: Final = {
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
_MONITOR_CONFIG: Final = (
    "timeoutEnable",
    "timeout",
    "timeoutKillEnable",
    "failEnable",
    "sendChannel",
    "alarmUrl",
)


# -- helpers ---------------------------------------------------------------------------------------


def _check_bytes(wire: str, value: str, limit: int) -> None:
    size = len(value.encode("utf-8", errors="surrogatepass"))
    if size > limit:
        raise DefinitionError(wire, _preview(value), f"is {size} bytes in UTF-8; at most {limit} are allowed")


def _preview(value: str) -> str:
    """A long value shortened for an error message."""
    return value if len(value) <= 60 else value[:57] + "..."


def _get(model: BaseModel, path: tuple[str, ...]) -> Any:
    value: Any = model
    for name in path:
        value = getattr(value, name)
    return value


def _put(data: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    for name in path[:-1]:
        data = data.setdefault(name, {})
    data[path[-1]] = value


def _wire_value(value: Any) -> Any:
    if isinstance(value, TimeType):
        return int(value)
    if isinstance(value, JobType | ExecuteMode | MisfirePolicy):
        return value.value
    return value


def _contact_to_wire(contact: Contact) -> dict[str, str]:
    wire = {"userPhone": contact.user_phone, "userName": contact.user_name}
    # The later fields only when set, so contacts without them read back as they always did.
    if contact.user_mail:
        wire["userMail"] = contact.user_mail
    if contact.ding:
        wire["ding"] = contact.ding
    return wire


def _section(data: Mapping[str, Any], key: str, prefix: str = "") -> Mapping[str, Any]:
    body = data.get(key)
    if body is None:
        return {}
    if not isinstance(body, Mapping):
        raise DefinitionError(prefix + key, body, "must be an object")
    return body


def _read_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """Known wire fields of ``params``, coerced to JSON types; absent, null and blank numbers skipped."""
    values: dict[str, Any] = {}
    for wire, spec in _BY_WIRE.items():
        raw = params.get(wire)
        if raw is None:
            continue
        if spec.coerce is not _as_str and isinstance(raw, str) and not raw.strip():
            continue  # an empty form field for a number or switch means "not given"
        values[wire] = spec.coerce(wire, raw)
    contacts = _read_contacts(params)
    if contacts is not None:
        values["contactInfo"] = contacts
    return values


def _read_contacts(params: Mapping[str, Any]) -> list[dict[str, str]] | None:
    """``contactInfo`` as a list of Contact fields, from any accepted form; None when absent."""
    flat: dict[int, dict[str, Any]] = {}
    for key, value in params.items():
        match = _FLAT_CONTACT.fullmatch(key) if isinstance(key, str) else None
        if match:
            index = int(match.group(1) or match.group(2))
            flat.setdefault(index, {})[match.group(3)] = value
    raw = params.get("contactInfo")
    if flat:
        if raw is not None:
            raise DefinitionError("contactInfo", raw, "give contactInfo as a list or flattened, not both")
        return [_read_contact(flat[index]) for index in sorted(flat)]
    if raw is None:
        return None
    if isinstance(raw, str):
        if not raw.strip():
            return []
        try:
            raw = json.loads(raw)
        except ValueError:
            raise DefinitionError(
                "contactInfo", raw, "must be a JSON list of {userPhone, userName} objects"
            ) from None
    if isinstance(raw, Mapping | Contact):
        raw = [raw]
    if not isinstance(raw, list | tuple):
        raise DefinitionError("contactInfo", raw, "must be a list of {userPhone, userName} objects")
    return [_read_contact(item) for item in raw]


def _read_contact(item: Any) -> dict[str, str]:
    if isinstance(item, Contact):
        return {"user_phone": item.user_phone, "user_name": item.user_name}
    if not isinstance(item, Mapping):
        raise DefinitionError("contactInfo", item, "each contact must be an object {userPhone, userName}")
    contact: dict[str, str] = {}
    for key, value in item.items():
        if key not in _CONTACT_KEYS:
            raise DefinitionError(
                "contactInfo",
                item,
                f"unknown contact key {key!r}; expected one of {', '.join(_CONTACT_KEYS)}",
            )
        if value is None:
            continue
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)  # phone numbers sometimes arrive as JSON numbers
        if not isinstance(value, str):
            raise DefinitionError(f"contactInfo.{key}", value, "must be a string")
        contact[_CONTACT_KEYS[key]] = value
    return contact
