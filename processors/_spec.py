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

This module holds the model and its wire methods; the limits live in ``_spec_limits``, the wire field
table in ``_spec_fields``, the option models in ``_spec_options`` and the reading of raw wire values in
``_spec_wire``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
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
from sx.processors._schedule import Schedule, api, to_definition_error
from sx.processors._spec_fields import (
    CONFIG_SECTIONS,
    CONFIG_TOP,
    FIELDS,
    MONITOR_CONFIG,
    REQUIRED_FIELDS,
    WIRE_NAMES,
)
from sx.processors._spec_limits import (
    MAX_ATTEMPTS,
    MAX_CALENDAR_CHARS,
    MAX_CLASS_NAME_CHARS,
    MAX_CONCURRENCY,
    MAX_CONTENT_BYTES,
    MAX_DATA_OFFSET,
    MAX_DESCRIPTION_CHARS,
    MAX_INTERVAL,
    MAX_NAME_CHARS,
    MAX_PARAMETERS_BYTES,
    at_most,
    check_bytes,
    preview,
)
from sx.processors._spec_options import MapOptions, MonitorOptions, WireModel
from sx.processors._spec_wire import (
    contact_to_wire,
    put_at,
    read_params,
    value_at,
    wire_section,
    wire_value,
)

# The option models a JobSpec holds are listed too: modules that build a JobSpec from its parts import
# them from here.
__all__ = ["JobSpec"]

_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_JOB_TYPE_ALIASES = {"golang": JobType.GO}


class JobSpec(WireModel):
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
    max_concurrency: Annotated[StrictInt, Field(ge=1), at_most(MAX_CONCURRENCY)] = 1
    max_attempt: Annotated[StrictInt, Field(ge=0), at_most(MAX_ATTEMPTS)] = 0
    attempt_interval: Annotated[StrictInt, Field(ge=0), at_most(MAX_INTERVAL)] = 30
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
        check_bytes("content", value, MAX_CONTENT_BYTES)
        return value

    @field_validator("parameters")
    @classmethod
    def _check_parameters(cls, value: str) -> str:
        check_bytes("parameters", value, MAX_PARAMETERS_BYTES)
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
                    "content", preview(self.content), "give a python job className or content, not both"
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
        for spec in FIELDS:
            params[spec.wire] = wire_value(value_at(self, spec.path))
        params["contactInfo"] = [contact_to_wire(c) for c in self.monitor.contacts]
        return params

    @classmethod
    def from_create_params(cls, params: Mapping[str, Any]) -> JobSpec:
        """Read CreateJob parameters; absent optional fields take the OpenAPI's defaults.

        Values may be strings (``"30"``, ``"true"``) or JSON types; ``contactInfo`` may be a list of
        objects, a JSON string or flattened (``contactInfo.1.userPhone=...``). Parameters that are no
        job field (namespace, groupId, jobId, ...) are ignored. A JSON null counts as absent.
        """
        values = read_params(params)
        missing = [wire for wire in REQUIRED_FIELDS if wire not in values]
        if missing:
            raise DefinitionError(missing[0], None, f"is required (missing: {', '.join(missing)})")
        return cls._from_values(values)

    def updated(self, params: Mapping[str, Any]) -> JobSpec:
        """This job with the fields ``params`` gives changed (UpdateJob); absent fields keep their value.

        When ``timeType`` changes, the fields bound to the old type (``timeExpression``, ``calendar``,
        ``dataOffset``) return to their defaults unless ``params`` gives them too.
        """
        changes = read_params(params)
        values = read_params(self.to_create_params())
        if "timeType" in changes and changes["timeType"] != self.schedule.time_type:
            for wire in ("timeExpression", "calendar", "dataOffset"):
                values.pop(wire, None)
        values.update(changes)
        return self._from_values(values)

    def to_job_config_info(self) -> dict[str, Any]:
        """GetJobInfo's ``data`` for this job (JobConfigInfo), without ``status`` and ``jobId``."""
        flat = self.to_create_params()
        info: dict[str, Any] = {wire: flat[wire] for wire in CONFIG_TOP}
        for section, wires in CONFIG_SECTIONS.items():
            info[section] = {wire: flat[wire] for wire in wires}
        info["jobMonitorInfo"] = {
            "monitorConfig": {wire: flat[wire] for wire in MONITOR_CONFIG},
            "contactInfo": flat["contactInfo"],
        }
        return info

    @classmethod
    def from_job_config_info(cls, data: Mapping[str, Any]) -> JobSpec:
        """Read a JobConfigInfo as :meth:`to_job_config_info` writes it (``status``, ``jobId`` ignored)."""
        flat: dict[str, Any] = {wire: data[wire] for wire in CONFIG_TOP if wire in data}
        for section, wires in CONFIG_SECTIONS.items():
            body = wire_section(data, section)
            flat.update({wire: body[wire] for wire in wires if wire in body})
        monitor_info = wire_section(data, "jobMonitorInfo")
        monitor_config = wire_section(monitor_info, "monitorConfig", "jobMonitorInfo.")
        flat.update({wire: monitor_config[wire] for wire in MONITOR_CONFIG if wire in monitor_config})
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
        for spec in FIELDS:
            if spec.wire in values:
                put_at(data, spec.path, values[spec.wire])
        if "contactInfo" in values:
            put_at(data, ("monitor", "contacts"), values["contactInfo"])
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise to_definition_error(exc, WIRE_NAMES) from None
