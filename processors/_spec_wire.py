"""Reading and writing a job definition's wire values: flat CreateJob parameters coerced to JSON types
(``contactInfo`` in any accepted form), values picked from and put into a JobSpec's nested fields, and
JobConfigInfo's sections.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel

from sx.processors._enums import ExecuteMode, JobType, MisfirePolicy, TimeType
from sx.processors._errors import DefinitionError
from sx.processors._spec_fields import FIELDS_BY_WIRE, as_str
from sx.processors._spec_options import Contact

__all__ = ["contact_to_wire", "put_at", "read_params", "value_at", "wire_section", "wire_value"]

_FLAT_CONTACT = re.compile(r"contactInfo(?:\.(\d+)|\[(\d+)\])\.(\w+)")
_CONTACT_KEYS = {"userPhone": "user_phone", "userName": "user_name", "userMail": "user_mail", "ding": "ding"}


def value_at(model: BaseModel, path: tuple[str, ...]) -> Any:
    value: Any = model
    for name in path:
        value = getattr(value, name)
    return value


def put_at(data: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    for name in path[:-1]:
        data = data.setdefault(name, {})
    data[path[-1]] = value


def wire_value(value: Any) -> Any:
    if isinstance(value, TimeType):
        return int(value)
    if isinstance(value, JobType | ExecuteMode | MisfirePolicy):
        return value.value
    return value


def contact_to_wire(contact: Contact) -> dict[str, str]:
    wire = {"userPhone": contact.user_phone, "userName": contact.user_name}
    # The later fields only when set, so contacts without them read back as they always did.
    if contact.user_mail:
        wire["userMail"] = contact.user_mail
    if contact.ding:
        wire["ding"] = contact.ding
    return wire


def wire_section(data: Mapping[str, Any], key: str, prefix: str = "") -> Mapping[str, Any]:
    body = data.get(key)
    if body is None:
        return {}
    if not isinstance(body, Mapping):
        raise DefinitionError(prefix + key, body, "must be an object")
    return body


def read_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """Known wire fields of ``params``, coerced to JSON types; absent, null and blank numbers skipped."""
    values: dict[str, Any] = {}
    for wire, spec in FIELDS_BY_WIRE.items():
        raw = params.get(wire)
        if raw is None:
            continue
        if spec.coerce is not as_str and isinstance(raw, str) and not raw.strip():
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
