"""The store's errors: ``StoreError`` and the ones raised by name.

::

    StoreError
    ├── DuplicateError   a row with the same unique key exists
    ├── NotFoundError    the row an update names does not exist
    ├── InUseError       the SQLite file is held by another scheduler
    └── FencedError      a write names a group lease its writer no longer holds
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["DuplicateError", "FencedError", "InUseError", "NotFoundError", "StoreError"]


class StoreError(Exception):
    """Base of the store's own errors."""


class DuplicateError(StoreError):
    """A row with the same unique key exists (a job name in a group, a namespace id, ...)."""


class NotFoundError(StoreError):
    """The row an update names does not exist."""


class InUseError(StoreError):
    """The SQLite file is held by another scheduler (an exclusive store); ``pid`` is the holder's, None
    when it could not be read."""

    def __init__(self, message: str, *, database: Path, pid: int | None) -> None:
        super().__init__(message)
        self.database = database
        self.pid = pid


class FencedError(StoreError):
    """A fenced write was refused, nothing written: the writer no longer holds the lease of the group of
    ``instance_ids`` (it expired, or another scheduler took it). The writer must stop acting for it."""

    def __init__(self, message: str, *, instance_ids: list[int]) -> None:
        super().__init__(message)
        self.instance_ids = instance_ids
