"""The ``sx-worker`` command: run a worker (embedding a scheduler by default), serve a scheduler, and more.

Options come from flags, ``SX_*`` environment variables or a config file (``--config``), in that order of
precedence; unknown keys in the file are errors. Exit codes are named in ``ExitCode``.
"""

from __future__ import annotations

import click

from sx.cli._alarms import alarms
from sx.cli._backfill import backfill, backfill_stop, backfills, rerun, rerun_workflow, workflow_backfill
from sx.cli._calendar import calendar
from sx.cli._check import check
from sx.cli._instance_log import logs
from sx.cli._instances import instances
from sx.cli._jobs import jobs
from sx.cli._keys import keys
from sx.cli._list import list_processors
from sx.cli._run import run
from sx.cli._serve import serve
from sx.cli._settings_flags import show_env_twins
from sx.cli._sync import sync
from sx.cli._workers import workers
from sx.cli._workflows import workflows

__all__ = ["main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="sx-worker")
def main() -> None:
    """sx-worker: scheduled and distributed jobs for Python services."""


for command in (run, serve, check, list_processors, sync, keys, calendar, workers, alarms, logs):
    main.add_command(command)
for command in (jobs, instances, workflows):  # the operator verbs
    main.add_command(command)
for command in (backfill, backfills, backfill_stop):  # the re-run verbs
    jobs.add_command(command)
instances.add_command(rerun)
workflows.add_command(rerun_workflow)
workflows.add_command(workflow_backfill)
# Last, so it reaches every verb: --help shows each option's default and SX_ twin.
show_env_twins(main)
