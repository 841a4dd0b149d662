"""Scheduler test fixtures: PostgreSQL databases and a started store on every backend.

- ``postgres_url`` (session): a database of its own for this test session (dropped at the end).
- ``store_url``: a fresh, empty database per test, parametrized over ``sqlite`` and ``postgres``.
- ``store``: a started `SqlStore` on ``store_url``.

PostgreSQL tests skip (with the reason, repeated in the terminal summary) when no server is reachable.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from sx.scheduler.store.sql import SqlStore, sqlite_url
from tests.postgres import PostgresServer, reset_database

_server_key = pytest.StashKey[PostgresServer]()


def _server(config: pytest.Config) -> PostgresServer:
    server = config.stash.get(_server_key, None)
    if server is None:
        server = PostgresServer.find()
        config.stash[_server_key] = server
    return server


@pytest.fixture(scope="session")
def postgres_server(pytestconfig: pytest.Config) -> Iterator[PostgresServer]:
    server = _server(pytestconfig)
    if server.unavailable is not None:
        pytest.skip(f"PostgreSQL tests skipped: {server.unavailable}")
    server.drop_stale_databases()
    yield server
    server.drop_databases()


@pytest.fixture(scope="session")
def postgres_url(postgres_server: PostgresServer) -> str:
    """A database created for this session (``postgresql://`` URL); SqlStore accepts it as is."""
    return postgres_server.create_database()


@pytest.fixture(scope="session")
def _store_postgres_url(postgres_server: PostgresServer) -> str:
    # Separate from postgres_url, which other tests use as they like.
    return postgres_server.create_database()


BACKENDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
]


@pytest.fixture(params=BACKENDS)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database on each backend."""
    if request.param == "sqlite":
        return sqlite_url(tmp_path / "store")
    url: str = request.getfixturevalue("_store_postgres_url")
    reset_database(url)
    return url


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[SqlStore]:
    """A started store on a fresh database, closed after the test."""
    started = SqlStore(store_url)
    await started.start()
    try:
        yield started
    finally:
        await started.close()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    server = config.stash.get(_server_key, None)
    if server is not None and server.unavailable is not None:
        terminalreporter.write_sep("!", "PostgreSQL tests were SKIPPED", yellow=True, bold=True)
        terminalreporter.write_line(f"WARNING: {server.unavailable}", yellow=True, bold=True)
