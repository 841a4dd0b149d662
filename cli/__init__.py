"""The ``sx-worker`` command: the only package that imports both the worker and the scheduler.

``main`` is the click group behind the console script; run it as ``sx-worker --help``.
"""

from sx.cli._main import main

__all__ = ["main"]
