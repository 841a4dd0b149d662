"""How values look on the console's pages: status names and colours, times, progress tables.

Times are rendered as ``<time>`` elements holding the UTC instant; the page's script shows them in the
browser's zone and keeps the UTC value as the hover title (so the HTML alone is still readable).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from markupsafe import Markup

from sx.processors import ExecuteMode, InstanceStatus, TimeType, TriggerType

__all__ = [
    "EXECUTE_MODES",
    "STATUS_NAMES",
    "TIME_TYPES",
    "TRIGGER_TYPES",
    "ProgressRow",
    "duration",
    "level_name",
    "map_progress",
    "status_class",
    "status_name",
    "time_tag",
]

STATUS_NAMES = {
    InstanceStatus.WAITING: "waiting",
    InstanceStatus.READY: "ready",
    InstanceStatus.RUNNING: "running",
    InstanceStatus.SUCCESS: "success",
    InstanceStatus.FAILED: "failed",
    InstanceStatus.REJECTED: "rejected",
}
TIME_TYPES = {
    TimeType.CRON: "cron",
    TimeType.FIXED_RATE: "fixed rate",
    TimeType.SECOND_DELAY: "second delay",
    TimeType.API: "api",
}
TRIGGER_TYPES = {
    TriggerType.SCHEDULED: "scheduled",
    TriggerType.DATA_RERUN: "backfill",
    TriggerType.API: "api",
    TriggerType.MANUAL_RERUN: "re-run",
    TriggerType.SYSTEM_RETRY: "retry",
}
EXECUTE_MODES = [mode.value for mode in ExecuteMode]


def status_name(status: InstanceStatus | int | None) -> str:
    """``success``, ``failed``, ...; ``not started`` for a workflow node that has no instance yet."""
    if status is None:
        return "not started"
    try:
        return STATUS_NAMES[InstanceStatus(status)]
    except ValueError:
        return f"status {status}"


def status_class(status: InstanceStatus | int | None) -> str:
    """The CSS class colouring a status (``st-success``, ...)."""
    return "st-" + status_name(status).replace(" ", "-")


def time_tag(value: datetime | None) -> Markup:
    """A ``<time>`` element for an instant; a dash when unset."""
    if value is None:
        return Markup('<span class="muted">–</span>')
    utc = value.astimezone(UTC)
    shown = utc.strftime("%Y-%m-%d %H:%M:%S UTC")
    return Markup('<time datetime="{0}" title="{1}">{1}</time>').format(
        utc.isoformat(timespec="seconds"), shown
    )


def duration(start: datetime | None, end: datetime | None) -> str:
    if start is None or end is None:
        return ""
    seconds = (end - start).total_seconds()
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


@dataclass(frozen=True, slots=True)
class ProgressRow:
    """One row of a map instance's progress: per task name or per worker."""

    label: str
    total: int
    pulled: int
    running: int
    success: int
    failed: int

    @property
    def percent(self) -> int:
        """Finished tasks, in percent of the total."""
        return round(100 * (self.success + self.failed) / self.total) if self.total else 0


def map_progress(progress: str) -> tuple[list[ProgressRow], list[ProgressRow]]:
    """The per-task-name and per-worker rows of a map instance's progress JSON; empty when it holds
    none (a standalone instance, or one that has not reported yet)."""
    try:
        data = json.loads(progress) if progress else {}
    except ValueError:
        return [], []
    if not isinstance(data, dict):
        return [], []

    def rows(items: Any, label: str) -> list[ProgressRow]:
        out = []
        for item in items if isinstance(items, list) else []:
            if isinstance(item, dict):
                out.append(
                    ProgressRow(
                        label=str(item.get(label, "")),
                        **{
                            k: int(item.get(k, 0) or 0)
                            for k in ("total", "pulled", "running", "success", "failed")
                        },
                    )
                )
        return out

    return rows(data.get("taskProgress"), "name"), rows(data.get("workerProgress"), "workerAddr")


_LEVELS = ((50, "CRITICAL"), (40, "ERROR"), (30, "WARNING"), (20, "INFO"), (0, "DEBUG"))


def level_name(level: int) -> str:
    """A log line's level name; a level between the named ones takes the name below it."""
    return next(name for number, name in _LEVELS if level >= number) if level >= 0 else "DEBUG"
