"""The store on SQLite or PostgreSQL (SQLAlchemy Core), with its Alembic migrations."""

from sx.scheduler.store.sql._store import SqlStore, normalize_url, sqlite_url

__all__ = ["SqlStore", "normalize_url", "sqlite_url"]
