"""Reading OpenAPI parameters: query string, form body or JSON body, merged (the body wins).

Values arrive as strings (query, form) or JSON values; the typed getters accept both and raise
BadRequest naming the field and the offending value, so bad input never becomes a server error. Rules
every parameter follows whatever its kind: text is valid Unicode (no lone surrogate, which a JSON
``\\udfff`` escape can carry and which no store or protocol can hold); a JSON body nests at most
``MAX_JSON_DEPTH`` levels.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from typing import Any
from urllib.parse import parse_qsl

from sx.scheduler._errors import BadRequest

__all__ = [
    "DATE_FORMAT",
    "LONG_MAX",
    "MAX_BODY_BYTES",
    "MAX_JSON_DEPTH",
    "MAX_TEXT_CHARS",
    "ParamDoc",
    "Params",
    "parse_body",
    "parse_query",
]

MAX_BODY_BYTES = 1024 * 1024
MAX_JSON_DEPTH = 32
MAX_TEXT_CHARS = 100_000
LONG_MAX = 2**63 - 1
DATE_FORMAT = "%Y-%m-%d %H:%M:%S"


@dataclass(frozen=True, slots=True)
class ParamDoc:
    """One documented parameter of an endpoint (for the OpenAPI document)."""

    name: str
    type: str  # "string", "integer", "boolean", "array"
    description: str = ""
    required: bool = False


def _is_ascii_int(text: str) -> bool:
    digits = text[1:] if text[:1] in ("+", "-") else text
    return digits.isascii() and digits.isdigit()


def _pairs_to_dict(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    # A repeated key (days=a&days=b) becomes a list; a single one stays a string.
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            previous = out[key]
            out[key] = [*previous, value] if isinstance(previous, list) else [previous, value]
        else:
            out[key] = value
    return out


def _decode(body: bytes) -> str:
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequest("body", body[:40], "is not UTF-8") from exc


def parse_body(body: bytes, content_type: str) -> dict[str, Any]:
    """Parameters from a request body: JSON object or x-www-form-urlencoded (sniffed when untyped)."""
    if not body.strip():
        return {}
    media = content_type.split(";", 1)[0].strip().lower()
    text = _decode(body)
    is_json = media.endswith("/json") or media.endswith("+json")
    if not media or (media not in ("application/x-www-form-urlencoded",) and not is_json):
        is_json = text.lstrip().startswith("{")
    if is_json:
        try:
            value = json.loads(text)
        except ValueError as exc:
            raise BadRequest("body", text, f"is not valid JSON ({exc})") from exc
        except RecursionError:
            raise BadRequest("body", text, f"nests more than {MAX_JSON_DEPTH} levels") from None
        if _depth(value) > MAX_JSON_DEPTH:
            raise BadRequest("body", text, f"nests more than {MAX_JSON_DEPTH} levels")
        if not isinstance(value, dict):
            raise BadRequest("body", text, "must be a JSON object of parameters")
        return value
    return _pairs_to_dict(parse_qsl(text, keep_blank_values=True))


def _nested(value: Any) -> Iterator[tuple[Any, int]]:
    """Every value inside ``value`` (object keys included) with the number of arrays and objects
    around it, without recursion (a hostile body may nest deeply)."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, level = stack.pop()
        yield item, level
        if isinstance(item, dict):
            stack.extend((child, level + 1) for child in (*item.keys(), *item.values()))
        elif isinstance(item, list):
            stack.extend((child, level + 1) for child in item)


def _depth(value: Any) -> int:
    """How many levels of arrays and objects ``value`` nests (0 for a scalar)."""
    return max(level + isinstance(item, dict | list) for item, level in _nested(value))


def _check_unicode(name: str, value: Any) -> None:
    """BadRequest naming ``name`` when any text in ``value`` holds a lone surrogate."""
    for item, _ in _nested(value):
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                raise BadRequest(name, item, "is not valid Unicode (it holds a lone surrogate)") from None


def parse_query(query: str) -> dict[str, Any]:
    return _pairs_to_dict(parse_qsl(query, keep_blank_values=True))


class Params:
    """A request's merged parameters with typed getters."""

    def __init__(self, values: Mapping[str, Any]) -> None:
        for name, value in values.items():
            shown = str(name).encode("utf-8", "backslashreplace").decode("utf-8")  # errors name it safely
            _check_unicode(shown, name)
            _check_unicode(shown, value)
        self.values: dict[str, Any] = dict(values)

    @classmethod
    def from_parts(cls, query: str, body: bytes, content_type: str) -> Params:
        merged = parse_query(query)
        merged.update(parse_body(body, content_type))
        return cls(merged)

    def has(self, name: str) -> bool:
        value = self.values.get(name)
        return value is not None and value != ""

    # -- scalars ------------------------------------------------------------------------------------
    def text(
        self, name: str, *, required: bool = False, default: str = "", max_chars: int = MAX_TEXT_CHARS
    ) -> str:
        value = self.values.get(name)
        if value is None or value == "":
            if required:
                raise BadRequest(name, value if value is not None else "", "is required")
            return default
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise BadRequest(name, value, "must be a string")
        text = str(value)
        if "\x00" in text:
            raise BadRequest(name, text, "must not contain a NUL character")
        if len(text) > max_chars:
            raise BadRequest(name, text, f"must be at most {max_chars} characters")
        return text

    def optional_text(self, name: str, *, max_chars: int = MAX_TEXT_CHARS) -> str | None:
        return self.text(name, max_chars=max_chars) if self.has(name) else None

    def integer(
        self,
        name: str,
        *,
        required: bool = False,
        default: int | None = None,
        minimum: int | None = None,
        maximum: int | None = LONG_MAX,
    ) -> int | None:
        value = self.values.get(name)
        if value is None or value == "":
            if required:
                raise BadRequest(name, value if value is not None else "", "is required")
            return default
        number: int
        if isinstance(value, bool):
            raise BadRequest(name, value, "must be an integer")
        if isinstance(value, int):
            number = value
        elif isinstance(value, float) and value.is_integer():
            number = int(value)
        elif isinstance(value, str) and _is_ascii_int(value.strip()) and len(value) <= 40:
            number = int(value.strip())
        else:
            raise BadRequest(name, value, "must be an integer")
        if minimum is not None and number < minimum:
            raise BadRequest(name, value, f"must be at least {minimum}")
        if maximum is not None and number > maximum:
            raise BadRequest(name, value, f"must be at most {maximum}")
        return number

    def required_id(self, name: str) -> int:
        """A long id (jobId, instanceId, ...): a positive integer."""
        number = self.integer(name, required=True, minimum=1)
        assert number is not None
        return number

    def page(self, *, max_size: int = 100, default_size: int = 20) -> tuple[int, int]:
        page_num = self.integer("pageNum", default=1, minimum=1, maximum=1_000_000)
        page_size = self.integer("pageSize", default=default_size, minimum=1, maximum=max_size)
        assert page_num is not None and page_size is not None
        return page_num, page_size

    def boolean(self, name: str, *, default: bool) -> bool:
        value = self.values.get(name)
        if value is None or value == "":
            return default
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("true", "1", "yes"):
            return True
        if isinstance(value, str) and value.strip().lower() in ("false", "0", "no"):
            return False
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        raise BadRequest(name, value, "must be true or false")

    def optional_boolean(self, name: str) -> bool | None:
        return self.boolean(name, default=False) if self.has(name) else None

    def text_list(self, name: str) -> list[str]:
        """A JSON list of strings, repeated keys, or one comma-separated string."""
        value = self.values.get(name)
        if value is None or value == "":
            return []
        items: list[Any]
        if isinstance(value, list):
            items = value
        elif isinstance(value, str):
            items = value.split(",")
        else:
            raise BadRequest(name, value, "must be a list or a comma-separated string")
        out: list[str] = []
        for item in items:
            if not isinstance(item, str):
                raise BadRequest(name, value, f"item {item!r} is not a string")
            for part in item.split(","):
                if part.strip():
                    out.append(part.strip())
        return out

    def instant(self, name: str, *, tz: tzinfo) -> datetime | None:
        """``yyyy-MM-dd HH:mm:ss`` in ``tz``, or epoch milliseconds; returned in UTC."""
        value = self.values.get(name)
        if value is None or value == "":
            return None
        if (isinstance(value, int) and not isinstance(value, bool)) or (
            isinstance(value, str) and _is_ascii_int(value)
        ):
            millis = int(value)
            if not 0 <= millis <= 253_402_300_799_999:  # 1970 to year 9999
                raise BadRequest(name, value, "is out of range")
            return datetime.fromtimestamp(millis / 1000, tz=UTC)
        if isinstance(value, str):
            try:
                return datetime.strptime(value.strip(), DATE_FORMAT).replace(tzinfo=tz).astimezone(UTC)
            except ValueError:
                pass
        raise BadRequest(name, value, "must be yyyy-MM-dd HH:mm:ss or epoch milliseconds")
