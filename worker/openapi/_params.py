"""Request fields that several OpenAPI route families encode alike (a time range of a listing)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

__all__ = ["time_range_params"]


def time_range_params(start_time: str | datetime | None, end_time: str | datetime | None) -> dict[str, Any]:
    """``startTime`` / ``endTime``: an aware datetime as epoch ms, text as given, None left out."""
    params: dict[str, Any] = {}
    for wire, value in (("startTime", start_time), ("endTime", end_time)):
        if isinstance(value, datetime):
            if value.tzinfo is None:
                raise ValueError(f"{wire}={value!r}: must be timezone-aware")
            params[wire] = int(value.timestamp() * 1000)
        elif value is not None:
            params[wire] = value
    return params
