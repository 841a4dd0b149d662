"""The schedulers store schema migrations (Alembic)."""
