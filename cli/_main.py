"""The ``sx-worker`` command: run a worker (embedding a scheduler by default), serve a scheduler, and more.

Options come from flags, ``SX_*`` environment variables or a config file (``--config``), in that order of
precedence; unknown keys in the file are errors. Exit codes are named in ``ExitCode``.
"""

from __future__ import annotations

import click

from sx.cli._alarms import alarms
from sx.cli._calendar import calendar
from sx.cli._check import check
from sx.cli._keys import keys
from sx.cli._list import list_processors
from sx.cli._run import run
from sx.cli._serve import serve
from sx.cli._sync import sync
from sx.cli._workers import workers

__all__ = ["main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="sx-worker")
def main() -> None:
    """sx-worker: scheduled and distributed jobs for Python services."""


for command in (run, serve, check, list_processors, sync, keys, calendar, workers, alarms):
    main.add_command(command)
