"""The store on SQLite or PostgreSQL (SQLAlchemy Core), with its Alembic migrations."""

from sx.scheduler.store.sql._dialect import normalize_url, sqlite_url
from sx.scheduler.store.sql._store import SqlStore

__all__ = ["SqlStore", "normalize_url", "sqlite_url"]
