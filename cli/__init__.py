"""The ``sx-worker`` command: the only package that imports both the worker and the scheduler.

``main`` is the click group behind the console script; run it as ``sx-worker --help``. ``ExitCode``
names the exit statuses scripts can rely on.
"""

from sx.cli._main import main
from sx.cli._support import ExitCode

__all__ = ["ExitCode", "main"]
