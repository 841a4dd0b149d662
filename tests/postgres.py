"""A PostgreSQL server for tests: find it (starting a local one if needed) and make throwaway databases.

The server URL comes from ``SX_TEST_POSTGRES_URL`` (default ``postgresql://postgres@127.0.0.1:5432/test``).
When no server can be reached, `PostgresServer.unavailable` holds the reason and tests that need it skip.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
from sqlalchemy.engine import URL, make_url

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/test"
_LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1", None}


T = TypeVar("T")


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to the end on its own loop in a helper thread: callable from sync fixtures,
    whether or not the calling thread already runs an event loop."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()


def configured_url() -> str:
    return os.environ.get("SX_TEST_POSTGRES_URL", DEFAULT_URL)


def _asyncpg_dsn(url: URL) -> str:
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


async def _can_connect(url: URL) -> str | None:
    """None when a connection works, else why not."""
    try:
        conn = await asyncpg.connect(_asyncpg_dsn(url), timeout=3)
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        return f"{type(exc).__name__}: {exc}"
    await conn.close()
    return None


def _run(command: list[str], timeout: float) -> str | None:
    """Run a command; None on success, else its error output."""
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{' '.join(command)}: {exc}"
    if done.returncode != 0:
        return f"{' '.join(command)}: exit {done.returncode}: {(done.stderr or done.stdout).strip()[:300]}"
    return None


def _start_local_cluster(url: URL) -> str | None:
    """Start (installing first if allowed) the local Debian PostgreSQL cluster; None on success.

    A cluster installed here is opened to ``url``'s user on loopback without a password (Debian's
    default asks for one over TCP) and given ``url``'s database, as the test machines' clusters are."""
    conf = Path("/etc/postgresql")
    installed = False
    if not (conf.is_dir() and any(conf.iterdir())):
        if os.geteuid() != 0 or shutil.which("apt-get") is None:
            return "PostgreSQL is not installed and cannot be installed here (needs root and apt-get)"
        _run(["apt-get", "update", "-qq"], timeout=300)  # a fresh machine's package lists may be empty
        error = _run(["apt-get", "install", "-y", "-qq", "postgresql"], timeout=600)
        if error is not None:
            return error
        installed = True
    if shutil.which("pg_ctlcluster") is None:
        return "pg_ctlcluster not found"
    errors = []
    for version in sorted(p.name for p in conf.iterdir()):
        if installed:
            _trust_loopback(conf / version / "main" / "pg_hba.conf")
        error = _run(["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "start"], timeout=60)
        if error is None:
            return _create_database(url) if installed else None
        errors.append(error)
    return "; ".join(errors) or "no cluster found under /etc/postgresql"


def _trust_loopback(hba: Path) -> None:
    """Let loopback connections in without a password (first matching line wins, so prepend)."""
    lines = "host all all 127.0.0.1/32 trust\nhost all all ::1/128 trust\n"
    if hba.is_file() and not hba.read_text().startswith(lines):
        hba.write_text(lines + hba.read_text())


def _create_database(url: URL) -> str | None:
    """Create ``url``'s database as the cluster's superuser (over the local socket)."""
    name = url.database or "postgres"
    if name == "postgres":
        return None
    return _run(["runuser", "-u", "postgres", "--", "createdb", name], timeout=60)


async def _wait_for(url: URL, deadline: float) -> str | None:
    reason = await _can_connect(url)
    while reason is not None and time.monotonic() < deadline:
        await asyncio.sleep(0.25)
        reason = await _can_connect(url)
    return reason


@dataclass
class PostgresServer:
    """The test server: `url` is the configured (admin) database; `unavailable` says why it is missing."""

    url: URL
    unavailable: str | None = None
    created: list[str] = field(default_factory=list)

    @classmethod
    def find(cls) -> PostgresServer:
        """Reach the configured server, starting a local one if it is down."""
        url = make_url(configured_url())
        reason = run_async(_can_connect(url))
        if reason is not None and url.host in _LOCAL_HOSTS:
            start_error = _start_local_cluster(url)
            if start_error is None:
                reason = run_async(_wait_for(url, time.monotonic() + 30))
            else:
                reason = f"{reason}; starting it failed: {start_error}"
        shown = url.render_as_string(hide_password=True)
        return cls(url=url, unavailable=None if reason is None else f"PostgreSQL at {shown}: {reason}")

    def create_database(self) -> str:
        """Create an empty database ``sx_test_<time>_<random>``; returns its URL (``postgresql://``)."""
        if self.unavailable is not None:
            raise RuntimeError(self.unavailable)
        # The creation time in the name lets a later session drop what a killed one left behind.
        name = f"sx_test_{int(time.time())}_{secrets.token_hex(4)}"
        run_async(self._admin(f'CREATE DATABASE "{name}"'))
        self.created.append(name)
        return self.url.set(database=name).render_as_string(hide_password=False)

    def drop_stale_databases(self, *, older_than: float = 6 * 3600) -> list[str]:
        """Drop test databases of killed sessions: named by `create_database`, older than
        ``older_than`` seconds, and with nobody connected. Returns their names."""
        if self.unavailable is not None:
            return []
        return run_async(self._drop_stale(time.time() - older_than))

    async def _drop_stale(self, cutoff: float) -> list[str]:
        conn = await asyncpg.connect(_asyncpg_dsn(self.url), timeout=10)
        dropped = []
        try:
            rows = await conn.fetch(
                "SELECT datname FROM pg_database d WHERE datname ~ '^sx_test_[0-9]+_[0-9a-f]+$' "
                "AND NOT EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.datname = d.datname)"
            )
            for row in rows:
                name = row["datname"]
                if int(name.split("_")[2]) >= cutoff:
                    continue
                try:  # without FORCE: someone who connected meanwhile keeps it
                    await conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
                except asyncpg.PostgresError:
                    continue
                dropped.append(name)
        finally:
            await conn.close()
        return dropped

    def drop_databases(self) -> None:
        """Drop every database this object created (connections still open are closed by force)."""
        while self.created:
            name = self.created.pop()
            run_async(self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))

    async def _admin(self, statement: str) -> None:
        conn = await asyncpg.connect(_asyncpg_dsn(self.url), timeout=10)
        try:
            await conn.execute(statement)
        finally:
            await conn.close()


def reset_database(url: str) -> None:
    """Empty a database by recreating its public schema (fast: no new database per test)."""
    run_async(_reset(url))


async def _reset(url: str) -> None:
    conn = await asyncpg.connect(_asyncpg_dsn(make_url(url)), timeout=10)
    try:
        await conn.execute("DROP SCHEMA IF EXISTS public CASCADE; CREATE SCHEMA public")
    finally:
        await conn.close()


def main() -> int:
    """``python -m tests.postgres``: make sure the test server runs (CI calls this before the tests)."""
    server = PostgresServer.find()
    if server.unavailable is not None:
        print(f"!! {server.unavailable}: the PostgreSQL tests will be SKIPPED", file=sys.stderr)
        return 1
    print(f"PostgreSQL is up at {server.url.render_as_string(hide_password=True)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
