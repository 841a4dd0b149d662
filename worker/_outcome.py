"""How an instance ended on its master, and how a failed peer call reads in a result.

Shared by the masters of every mode: ``BroadcastMaster`` and the map package's ``MapMaster`` both end
with an ``Outcome`` and both name a failed ``StartTasks`` or ``CheckAlive`` with ``error_text``.
"""

from __future__ import annotations

from dataclasses import dataclass

from sx.processors import InstanceStatus
from sx.processors.engine import describe_exception

__all__ = ["Outcome", "error_text"]


@dataclass(frozen=True, slots=True)
class Outcome:
    """How an instance ended on its master."""

    status: InstanceStatus
    result: str = ""
    progress: str = ""


def error_text(exc: BaseException) -> str:
    """A failed call in a few words: a gRPC error's details, else ``"Type: message"``."""
    details = getattr(exc, "details", None)
    if callable(details):
        try:
            text = details()
            if text:
                return str(text)
        except Exception:
            pass
    return describe_exception(exc)
