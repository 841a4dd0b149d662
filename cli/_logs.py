"""How the commands log: text for people, or JSON lines (``--log-format json``) for log pipelines.

A JSON line has ``time`` (ISO 8601, UTC), ``level``, ``logger`` and ``message``, ``exc_info`` when
there is a traceback, and the ids of the job run it belongs to when it has them: ``job_id``,
``instance_id``, ``task_id`` and ``wf_instance_id`` (for a workflow node). They come from the call's
``extra=`` (the job context's ``ctx.logger`` passes them), or else from the job context current where the
line was logged: inside a processor hook, ``logging.getLogger(__name__).info(...)`` carries them too.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from pythonjsonlogger.json import JsonFormatter

from sx.processors import get_current_context

__all__ = ["LOG_FORMATS", "JobIdsFilter", "JsonLineFormatter", "setup_logging"]

LOG_FORMATS = ("text", "json")

_IDS = ("job_id", "instance_id", "task_id", "wf_instance_id")


class JobIdsFilter(logging.Filter):
    """Gives each record the job run's ids (see the module docstring); never drops a record."""

    def filter(self, record: logging.LogRecord) -> bool:
        fields = record.__dict__
        if "job_id" in fields:
            return True
        if "sx_job_id" in fields:  # set by the job context's logger (JobLogger)
            for name in _IDS:
                fields[name] = fields.get(f"sx_{name}", 0)
            return True
        ctx = get_current_context()
        if ctx is not None:
            fields.update(
                job_id=ctx.job_id,
                instance_id=ctx.instance_id,
                task_id=ctx.task_id,
                wf_instance_id=ctx.wf_instance_id,
            )
        return True


class JsonLineFormatter(JsonFormatter):
    """One JSON object per record, with the fields named above."""

    def __init__(self) -> None:
        super().__init__(
            "%(levelname)s %(name)s %(message)s",
            rename_fields={"levelname": "level", "name": "logger"},
            timestamp="time",
            json_ensure_ascii=False,
        )

    def add_fields(
        self, log_data: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]
    ) -> None:
        super().add_fields(log_data, record, message_dict)
        fields = dict(log_data)
        log_data.clear()
        log_data["time"] = fields.pop("time")  # first, where people and parsers look for it
        log_data.update(fields)
        for key in [k for k in log_data if k.startswith("sx_")]:
            del log_data[key]  # the JobLogger's copies of the ids, renamed by JobIdsFilter
        if not log_data.get("wf_instance_id"):
            log_data.pop("wf_instance_id", None)


def setup_logging(level: str, log_format: str = "text") -> None:
    """Log to stderr at ``level`` in ``log_format`` (``text`` or ``json``)."""
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonLineFormatter())
        handler.addFilter(JobIdsFilter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    logging.basicConfig(level=level.upper(), handlers=[handler])
    # Libraries that narrate every request or migration step: only their warnings are news.
    for noisy in ("alembic", "httpx", "httpcore", "uvicorn"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))
