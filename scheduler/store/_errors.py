"""The store's errors: ``StoreError`` and the two every backend raises by name.

::

    StoreError
    ├── DuplicateError   a row with the same unique key exists
    └── NotFoundError    the row an update names does not exist
"""

from __future__ import annotations

__all__ = ["DuplicateError", "NotFoundError", "StoreError"]


class StoreError(Exception):
    """Base of the store's own errors."""


class DuplicateError(StoreError):
    """A row with the same unique key exists (a job name in a group, a namespace id, ...)."""


class NotFoundError(StoreError):
    """The row an update names does not exist."""
