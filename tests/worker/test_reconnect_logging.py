"""A worker that cannot reach its scheduler: one WARNING, then quiet retries, then what to check."""

from __future__ import annotations

import asyncio
import logging
import socket
import time

import pytest

from sx.processors import Registry
from sx.worker import Worker, WorkerSettings

DEADLINE = 60.0


def closed_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_an_unreachable_scheduler_is_reported_once_then_with_what_to_check(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The hint comes after 30 s by default; a fraction of that keeps the test short.
    monkeypatch.setattr("sx.worker._reconnect.UNREACHABLE_HINT_AFTER", 0.5)
    caplog.set_level(logging.DEBUG, logger="sx.worker")
    address = f"127.0.0.1:{closed_port()}"
    settings = WorkerSettings(server=address, group_id="g", app_key="k")
    async with Worker(settings, registry=Registry()):
        deadline = time.monotonic() + DEADLINE
        while not any("sx-worker check --server" in r.getMessage() for r in caplog.records):
            assert time.monotonic() < deadline, "the worker never said what to check"
            await asyncio.sleep(0.05)
    failures = [r for r in caplog.records if "stream failed" in r.getMessage()]
    assert len(failures) >= 2  # it kept retrying
    assert [r.levelno for r in failures[:1]] == [logging.WARNING]
    assert {r.levelno for r in failures[1:]} == {logging.DEBUG}  # repeats do not fill the log
    hint, *_ = [r for r in caplog.records if "sx-worker check" in r.getMessage()]
    assert hint.levelno == logging.WARNING
    assert f"sx-worker check --server {address}" in hint.getMessage()
    reconnects = [r for r in caplog.records if "reconnecting to scheduler" in r.getMessage()]
    assert [r.levelno for r in reconnects[:1]] == [logging.INFO]
    assert {r.levelno for r in reconnects[1:]} <= {logging.DEBUG}
