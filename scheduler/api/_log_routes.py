"""The GetInstanceLog extension: an instance's online log, paged by offset, filtered, and followed."""

from __future__ import annotations

import logging
from datetime import tzinfo
from typing import Any

from sx.scheduler._errors import BadRequest
from sx.scheduler.api._call import ADDRESS, JOB_ID, Call, Endpoint
from sx.scheduler.api._params import DATE_FORMAT, ParamDoc
from sx.scheduler.store import LogLine

__all__ = ["ENDPOINTS", "LEVELS", "MAX_LIMIT", "MAX_WAIT", "log_line_view"]

LEVELS = {"DEBUG": logging.DEBUG, "INFO": logging.INFO, "WARNING": logging.WARNING, "ERROR": logging.ERROR,
          "CRITICAL": logging.CRITICAL}  # fmt: skip
MAX_LIMIT = 1_000
MAX_WAIT = 60
"""Seconds a follow request may wait for new lines."""
DEFAULT_WAIT = 20


def level_name(level: int) -> str:
    """``INFO``, ``WARNING``, ...; a level between the named ones takes the name below it."""
    named = [name for name, number in LEVELS.items() if number <= level]
    return named[-1] if named else "DEBUG"


def log_line_view(line: LogLine, tz: tzinfo) -> dict[str, Any]:
    """One line: ``time`` in the scheduler's zone with milliseconds, ``timeMs`` since the epoch."""
    local = line.time.astimezone(tz)
    return {
        "offset": line.seq,
        "time": f"{local.strftime(DATE_FORMAT)}.{line.time_ms % 1000:03d}",
        "timeMs": line.time_ms,
        "level": level_name(line.level),
        "workerId": line.worker_id,
        "taskId": line.task_id,
        "taskName": line.task_name,
        "message": line.message,
    }


async def get_instance_log(call: Call) -> dict[str, Any]:
    namespace, group_id = call.namespace(), call.group_id()
    job_id = call.params.required_id("jobId")
    instance_id = call.params.required_id("instanceId")
    offset = call.params.integer("offset", default=0, minimum=0)
    limit = call.params.integer("limit", default=100, minimum=1, maximum=MAX_LIMIT)
    level_text = call.params.optional_text("level", max_chars=20)
    min_level = 0
    if level_text is not None and level_text.strip():
        min_level = LEVELS.get(level_text.strip().upper(), -1)
        if min_level < 0:
            raise BadRequest("level", level_text, f"must be one of {', '.join(LEVELS)}")
    task_id = call.params.integer("taskId", minimum=0)
    task_name = call.params.optional_text("taskName", max_chars=255)
    follow = call.params.boolean("follow", default=False)
    wait = call.params.integer("wait", default=DEFAULT_WAIT if follow else 0, minimum=0, maximum=MAX_WAIT)
    assert offset is not None and limit is not None and wait is not None
    log = await call.services.instance_logs().read(
        namespace,
        group_id,
        job_id,
        instance_id,
        offset=offset,
        limit=limit,
        min_level=min_level,
        task_id=task_id,
        task_name=task_name or None,
        wait=float(wait) if follow else 0.0,
    )
    tz = call.services.jobs.default_tz
    return {
        "jobId": job_id,
        "instanceId": instance_id,
        "offset": offset,
        "nextOffset": log.next_offset,
        "complete": log.complete,
        "lines": [log_line_view(line, tz) for line in log.lines],
    }


ENDPOINTS = (
    Endpoint(
        "GetInstanceLog",
        ("/openapi/v1/instance/log",),
        "Read (and follow) an instance's online log",
        get_instance_log,
        "Extensions",
        (
            *ADDRESS,
            JOB_ID,
            ParamDoc("instanceId", "integer", "instance id", required=True),
            ParamDoc("offset", "integer", "lines after this `offset` (default 0: from the start)"),
            ParamDoc("limit", "integer", f"lines at most, 1 to {MAX_LIMIT} (default 100)"),
            ParamDoc("level", "string", "this level or above: DEBUG, INFO, WARNING, ERROR, CRITICAL"),
            ParamDoc("taskId", "integer", "map modes: only this subtask's lines"),
            ParamDoc("taskName", "string", "map modes: only lines of subtasks of this name"),
            ParamDoc("follow", "boolean", "wait for a line after `offset` (long poll)"),
            ParamDoc("wait", "integer", f"follow: seconds at most, 0 to {MAX_WAIT} (default {DEFAULT_WAIT})"),
        ),
        description="The lines the instance's processor logged through `ctx.logger` (and a script "
        "job's output; with the job's `captureLogs`, plain logging and print inside its hooks too), "
        "as its workers shipped them, in order. Each line's `offset` numbers it in the instance's log "
        "(from 1); pass the answer's `nextOffset` as `offset` to read on. With `follow=true` the "
        "request waits up to `wait` seconds for a line after `offset` (it reads the store, so any "
        "replica answers). `complete` is true once the instance finished a few seconds ago and every "
        "line was read: nothing more will come. An instance keeps at most the scheduler's "
        "`instance_log_lines` lines (10,000 by default); its last line then says how many were dropped "
        '("truncated: N lines dropped"). The log is deleted with the instance.',
        data="{jobId, instanceId, offset, nextOffset, complete, lines: [{offset, time, timeMs, level, "
        "workerId, taskId, taskName, message}]}",
        extension=True,
    ),
)
