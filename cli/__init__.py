"""The ``sx-worker`` command: the only package that imports both the worker and the scheduler.

``main`` is the click group behind the console script; run it as ``sx-worker --help`` (or
``python -m sx``). ``ExitCode`` names the exit statuses scripts can rely on; ``settings_reference``
renders docs/settings.md from the settings models.
"""

import os

# Workers fork only to exec scripts, and uvloop forks with gRPC's fork handlers armed: those handlers
# (made for fork without exec) crashed such a child when another thread was inside gRPC. They stay off
# unless the environment asks for them; gRPC reads this when it is first imported.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

from sx.cli._main import main
from sx.cli._settings_doc import settings_reference
from sx.cli._support import ExitCode

__all__ = ["ExitCode", "main", "settings_reference"]
