"""What the store reads from its database's dialect: the URL (and async driver) a store runs on, and the
SQLSTATE of a database error.

``sqlite://`` and ``postgresql://`` URLs are accepted; each gets its async driver (aiosqlite, asyncpg).
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, IntegrityError

__all__ = ["is_foreign_key_violation", "normalize_url", "sqlite_url", "sqlstate"]

_SQLITE_FILE: Final = "scheduler.db"


def sqlite_url(data_dir: Path) -> str:
    """The embedded store's URL: a SQLite file ``scheduler.db`` in ``data_dir``."""
    path = Path(data_dir).expanduser().resolve() / _SQLITE_FILE
    return URL.create("sqlite+aiosqlite", database=str(path)).render_as_string(hide_password=False)


def normalize_url(url: str) -> URL:
    """Parse a store URL and pick the async driver: ``sqlite://`` and ``postgresql://`` are accepted."""
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise ValueError(f"url={url!r}: not a database URL ({exc})") from None
    driver = parsed.drivername
    if driver in ("sqlite", "sqlite+aiosqlite"):
        return parsed.set(drivername="sqlite+aiosqlite")
    if driver in ("postgresql", "postgres", "postgresql+asyncpg"):
        return parsed.set(drivername="postgresql+asyncpg")
    shown = parsed.render_as_string(hide_password=True)
    raise ValueError(
        f"url={shown!r}: unsupported database {driver!r}; use sqlite+aiosqlite:///<path> "
        "or postgresql+asyncpg://user@host/db"
    )


def sqlstate(exc: DBAPIError) -> str | None:
    for candidate in (exc.orig, getattr(exc.orig, "__cause__", None)):
        code = getattr(candidate, "sqlstate", None) or getattr(candidate, "pgcode", None)
        if isinstance(code, str):
            return code
    return None


def is_foreign_key_violation(exc: IntegrityError) -> bool:
    return sqlstate(exc) == "23503" or "foreign key" in str(exc.orig).lower()
