"""What a processor hook returns, and how its return value becomes a ``ProcessResult``."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from sx.processors._enums import InstanceStatus
from sx.processors._errors import ResultTooLargeError

__all__ = [
    "KILLED",
    "RESULT_LIMIT_BYTES",
    "ProcessResult",
    "describe_exception",
    "is_killed",
    "killed_result",
    "shorten_head",
    "shorten_tail",
    "to_result",
]

RESULT_LIMIT_BYTES = 1000
"""The documented limit on ``ProcessResult.result``, in UTF-8 bytes."""

_SHORTENED = " … (shortened)"
_TAIL_SHORTENED = "(shortened) … "


@dataclass(frozen=True, slots=True)
class ProcessResult:
    """The outcome of one hook call: ``status`` SUCCESS or FAILED and a short ``result`` text.

    ``result`` is at most ``RESULT_LIMIT_BYTES`` UTF-8 bytes; a longer one raises
    ``ResultTooLargeError`` rather than being cut, because a silently cut result is worse than none.
    """

    status: InstanceStatus
    result: str = ""

    def __post_init__(self) -> None:
        if self.status not in (InstanceStatus.SUCCESS, InstanceStatus.FAILED):
            raise ValueError(f"status={self.status!r}: a ProcessResult is SUCCESS or FAILED")
        if not isinstance(self.result, str):
            raise TypeError(f"result={self.result!r}: must be a str, got {type(self.result).__name__}")
        size = len(self.result.encode("utf-8"))
        if size > RESULT_LIMIT_BYTES:
            raise ResultTooLargeError(
                f"result is {size} bytes, over the {RESULT_LIMIT_BYTES}-byte limit; "
                "return a shorter result (store large outputs elsewhere and return a reference)"
            )

    @classmethod
    def success(cls, result: str = "") -> ProcessResult:
        """A successful result."""
        return cls(InstanceStatus.SUCCESS, result)

    @classmethod
    def failure(cls, result: str) -> ProcessResult:
        """A failed result; ``result`` says why."""
        return cls(InstanceStatus.FAILED, result)

    @property
    def ok(self) -> bool:
        """True when the status is SUCCESS."""
        return self.status is InstanceStatus.SUCCESS


def to_result(value: object) -> ProcessResult:
    """Turn a hook's return value into a ``ProcessResult``.

    ``None`` is success with an empty result, a ``str`` is the result text, a pydantic model is its
    JSON, and any other JSON-able value is ``json.dumps``-ed. Raises ``ResultTooLargeError`` when the
    text is over the limit and ``TypeError`` when the value cannot be turned into text.
    """
    if value is None:
        return ProcessResult.success()
    if isinstance(value, ProcessResult):
        return value
    if isinstance(value, str):
        return ProcessResult.success(value)
    if isinstance(value, BaseModel):
        return ProcessResult.success(value.model_dump_json())
    try:
        text = json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise TypeError(
            f"a hook returned {type(value).__name__} {_preview(value)}, which is not JSON-able; "
            "return a ProcessResult, a str, None or a JSON-compatible value"
        ) from exc
    return ProcessResult.success(text)


def shorten_head(text: str, limit: int = RESULT_LIMIT_BYTES) -> str:
    """Keep the start of ``text`` within ``limit`` UTF-8 bytes, saying so when it was shortened."""
    data = text.encode("utf-8")
    if len(data) <= limit:
        return text
    room = limit - len(_SHORTENED.encode("utf-8"))
    return data[:room].decode("utf-8", errors="ignore") + _SHORTENED


def shorten_tail(text: str, limit: int = RESULT_LIMIT_BYTES) -> str:
    """Keep the end of ``text`` within ``limit`` UTF-8 bytes, saying so when it was shortened."""
    data = text.encode("utf-8")
    if len(data) <= limit:
        return text
    room = limit - len(_TAIL_SHORTENED.encode("utf-8"))
    return _TAIL_SHORTENED + data[len(data) - room :].decode("utf-8", errors="ignore")


def _preview(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


KILLED = "killed"
"""The result text of a hook stopped by cancellation."""


def killed_result(reason: str = "") -> str:
    """The result of an instance or task that was stopped: ``killed`` or ``killed: <reason>``."""
    return f"{KILLED}: {reason}" if reason else KILLED


def is_killed(result: str) -> bool:
    """Whether a result says the instance was stopped (a stopped instance is never retried)."""
    return result == KILLED or result.startswith(f"{KILLED}: ")


def describe_exception(exc: BaseException) -> str:
    """``"ExceptionType: message"`` within the result limit."""
    message = str(exc)
    text = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
    return shorten_head(text)
