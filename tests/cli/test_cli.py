"""The sx-worker command: list, keys, calendar, settings files, and the scheduler's exposure check."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from sx.cli._main import main
from sx.processors import Registry, use_registry, use_workflows
from sx.scheduler import SchedulerServer, SchedulerSettings, SchedulerStartError

DEADLINE = 60.0
"""Seconds for a request to (and the start or stop of) the scheduler thread: httpx's default of 5 s
is short for a busy machine, where this thread shares the GIL with the test."""


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def fresh_registry() -> Iterator[Registry]:
    with use_registry(Registry()) as registry, use_workflows():
        yield registry


class ThreadedScheduler:
    """A scheduler on its own loop in a thread, so the CLI under test can run its own loop."""

    def __init__(self, settings: SchedulerSettings) -> None:
        self.settings = settings
        self.server: SchedulerServer | None = None
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        async with SchedulerServer(self.settings) as server:
            self.server = server
            self._ready.set()
            await self._stop.wait()

    def __enter__(self) -> SchedulerServer:
        self._thread.start()
        assert self._ready.wait(DEADLINE), "the scheduler did not start"
        assert self.server is not None
        return self.server

    def __exit__(self, *exc: object) -> None:
        assert self._loop is not None and self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        # Stopped for real (ports closed, store released) before the caller goes on, e.g. to start
        # another scheduler on the same data folder.
        self._thread.join(DEADLINE)
        assert not self._thread.is_alive(), "the scheduler did not stop"

    def call(self, coro: object) -> object:
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(DEADLINE)  # type: ignore[arg-type]


def test_list_prints_the_job_definitions_the_code_declares(
    runner: CliRunner, fresh_registry: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "cli_listed_jobs.py").write_text(
        "from sx.processors import Processor, cron, processor\n"
        "@processor(name='billing.nightly', schedule=cron('0 0 2 * * ?'), max_attempt=2)\n"
        "class Nightly(Processor):\n"
        "    def process(self, ctx):\n"
        "        return 'ok'\n"
    )
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(main, ["list", "cli_listed_jobs", "--output", "json"])
    assert result.exit_code == 0, result.output
    listed = json.loads(result.output)
    assert [entry["name"] for entry in listed] == ["billing.nightly"]
    job = listed[0]["job"]
    assert (job["timeType"], job["timeExpression"], job["maxAttempt"]) == (1, "0 0 2 * * ?", 2)


def test_list_of_a_missing_module_is_a_clear_usage_error(runner: CliRunner) -> None:
    result = runner.invoke(main, ["list", "no_such_module_here"])
    assert result.exit_code == 2
    assert "cannot import 'no_such_module_here'" in result.output


def test_run_without_processors_is_a_usage_error(runner: CliRunner, fresh_registry: object) -> None:
    result = runner.invoke(main, ["run", "json"])  # a module with no @processor classes
    assert result.exit_code == 2
    assert "no @processor classes were registered by importing json" in result.output


def test_an_unknown_key_in_the_config_file_is_refused(
    runner: CliRunner, fresh_registry: object, tmp_path: Path
) -> None:
    config = tmp_path / "sx.toml"
    config.write_text('[worker]\nnamespace = "ns"\nconcurrancy = 4\n')
    result = runner.invoke(main, ["run", "examples.hello", "--config", str(config)])
    assert result.exit_code == 2
    assert "concurrancy" in result.output and "unknown setting" in result.output


def test_run_with_half_a_client_certificate_is_a_usage_error_naming_it(
    runner: CliRunner, fresh_registry: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cert = tmp_path / "client.pem"
    cert.write_text("never read: the key is missing")
    monkeypatch.setenv("SX_TLS_CERT", str(cert))
    result = runner.invoke(main, ["run", "examples.hello", "--server", "127.0.0.1:1"])
    assert result.exit_code == 2, result.output
    assert "tls_cert is set but tls_key is not" in result.output
    assert fresh_registry.all() == []  # refused before any user code was imported


def test_keys_created_by_the_cli_make_the_scheduler_require_signatures(
    runner: CliRunner, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    created = runner.invoke(
        main, ["keys", "create", "--namespace", "team", "--data-dir", str(data), "--output", "json"]
    )
    assert created.exit_code == 0, created.output
    key = json.loads(created.stdout)
    assert key["namespace"] == "team" and key["accessKeyId"] and key["accessKeySecret"]

    listed = runner.invoke(main, ["keys", "list", "--data-dir", str(data), "--output", "json"])
    assert [k["accessKeyId"] for k in json.loads(listed.stdout)] == [key["accessKeyId"]]
    assert "accessKeySecret" not in listed.output

    settings = SchedulerSettings(data_dir=data, http_port=0, grpc_port=0)
    with ThreadedScheduler(settings) as server:
        answer = httpx.post(f"{server.http_url}/openapi/v1/namespace/list", timeout=DEADLINE)
        assert answer.status_code == 401 and answer.json()["success"] is False

    deleted = runner.invoke(main, ["keys", "delete", key["accessKeyId"], "--data-dir", str(data)])
    assert deleted.exit_code == 0, deleted.output
    with ThreadedScheduler(settings) as server:
        unsigned = httpx.post(f"{server.http_url}/openapi/v1/namespace/list", timeout=DEADLINE)
        assert unsigned.status_code == 200


def test_calendar_load_from_a_file(runner: CliRunner, tmp_path: Path) -> None:
    days = tmp_path / "workdays.txt"
    days.write_text("# 2030 public holidays excluded\n2030-01-02\n2030-01-03  # a Thursday\n\n")
    threaded = ThreadedScheduler(SchedulerSettings(data_dir=tmp_path / "data", http_port=0, grpc_port=0))
    with threaded as server:
        created = httpx.post(
            f"{server.http_url}/openapi/v1/namespace/create",
            data={"namespace": "default"},
            timeout=DEADLINE,
        )
        assert created.json()["success"], created.text
        result = runner.invoke(
            main,
            [
                "calendar",
                "load",
                "workdays",
                str(days),
                "--server",
                server.http_url,
                "--namespace",
                "default",
            ],
        )
        assert result.exit_code == 0, result.output
        assert "2 days" in result.output
        stored = threaded.call(server.store.get_calendar("default", "workdays"))
    assert stored is not None
    assert sorted(d.isoformat() for d in stored.days) == ["2030-01-02", "2030-01-03"]  # type: ignore[attr-defined]


def test_calendar_file_with_a_bad_line_names_it(runner: CliRunner, tmp_path: Path) -> None:
    days = tmp_path / "bad.txt"
    days.write_text("2030-01-02\n2030-13-01\n")
    result = runner.invoke(main, ["calendar", "load", "c", str(days), "--server", "http://127.0.0.1:9"])
    assert result.exit_code == 2
    assert "bad.txt:2: '2030-13-01' is not a yyyy-MM-dd date" in result.output


async def test_scheduler_refuses_to_listen_remotely_without_access_keys(tmp_path: Path) -> None:
    # Refused before any port is opened, so nothing listens beyond loopback.
    settings = SchedulerSettings(data_dir=tmp_path, http_host="0.0.0.0", http_port=0, grpc_port=0)
    server = SchedulerServer(settings)
    with pytest.raises(SchedulerStartError, match=r"refusing to listen on 0\.0\.0\.0: no access key exists"):
        await server.start()
    await server.stop()


async def test_scheduler_says_at_start_that_it_accepts_unsigned_requests(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = SchedulerSettings(data_dir=tmp_path, http_port=0, grpc_port=0)
    with caplog.at_level(logging.INFO, logger="sx.scheduler"):
        async with SchedulerServer(settings):
            pass
    assert "no access key exists: the OpenAPI accepts unsigned requests" in caplog.text
