"""``sx-worker workers`` and ``sx-worker alarms`` through click's CliRunner against a live scheduler
(alarms raised by the scheduler itself; real connected workers are listed by the command in
tests/e2e/test_listings_e2e.py)."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator

import pytest
from click.testing import CliRunner, Result

from sx.cli import ExitCode
from sx.cli._main import main
from sx.worker.openapi import SyncOpenApiClient
from tests.worker.openapi.test_client import GROUP, NS, threaded_scheduler
from tests.worker.openapi.test_listings import alarmed_spec, raise_alarm


@pytest.fixture(scope="module")
def alarmed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, int]]]:
    """A scheduler whose group has two alarms: job ``logged``'s delivered, job ``lost``'s not (its
    channel does not exist); yields the OpenAPI URL and the instance id per job name."""
    with threaded_scheduler(tmp_path_factory.mktemp("cli-listings")) as url:
        with SyncOpenApiClient(url, namespace=NS, group_id=GROUP) as client:
            client.ensure_group()
            instances = {}
            for name, channel in (("logged", "log"), ("lost", "pager")):
                job_id = client.create_job(alarmed_spec(name, channel))
                instances[name] = client.run(raise_alarm(client.client, job_id))
        yield url, instances


def invoke(url: str, *args: str) -> Result:
    return CliRunner().invoke(
        main, [*args, "--openapi", url, "--namespace", NS, "--group", GROUP], catch_exceptions=False
    )


def test_alarms_as_json_and_as_a_table(alarmed: tuple[str, dict[str, int]]) -> None:
    url, instances = alarmed
    result = invoke(url, "alarms", "--output", "json")
    assert result.exit_code == 0, result.output
    page = json.loads(result.output)
    assert (page["total"], page["pageNum"], page["pageSize"]) == (2, 1, 20)
    assert [a["instanceId"] for a in page["alarms"]] == [instances["lost"], instances["logged"]]
    assert [a["delivered"] for a in page["alarms"]] == [False, True]
    assert "no alarm channel named 'pager'" in page["alarms"][0]["error"]

    table = invoke(url, "alarms")
    assert table.exit_code == 0, table.output
    header, lost, logged, footer = table.output.splitlines()
    assert header.split() == ["TIME", "JOB", "INSTANCE", "KIND", "CHANNEL", "OUTCOME"]
    assert f" {instances['lost']} " in lost and "pager" in lost and "not delivered: no alarm channel" in lost
    assert f" {instances['logged']} " in logged and logged.endswith("delivered")
    assert footer == f"2 of 2 alarms in {NS}/{GROUP} (page 1)"


def test_alarm_filters_and_paging(alarmed: tuple[str, dict[str, int]]) -> None:
    url, instances = alarmed

    def instance_ids(*args: str) -> list[int]:
        result = invoke(url, "alarms", "--output", "json", *args)
        assert result.exit_code == 0, result.output
        return [a["instanceId"] for a in json.loads(result.output)["alarms"]]

    assert instance_ids("--undelivered") == [instances["lost"]]
    assert instance_ids("--delivered") == [instances["logged"]]
    assert instance_ids("--page", "2", "--page-size", "1") == [instances["logged"]]
    assert instance_ids("--since", "2000-01-01 00:00:00", "--until", "2000-01-02 00:00:00") == []
    assert instance_ids("--job-id", "999999") == []


def test_workers_of_a_group_without_any(alarmed: tuple[str, dict[str, int]]) -> None:
    url, _ = alarmed
    result = invoke(url, "workers", "--output", "json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == {"total": 0, "pageNum": 1, "pageSize": 20, "workers": []}
    table = invoke(url, "workers")
    assert table.exit_code == 0, table.output
    assert table.output.splitlines()[-1] == f"0 of 0 workers in {NS}/{GROUP} (page 1)"


def test_bad_arguments_and_refusals_exit_with_a_clear_message(alarmed: tuple[str, dict[str, int]]) -> None:
    url, _ = alarmed
    for verb in ("workers", "alarms"):
        result = invoke(url, verb, "--page-size", "0")
        assert result.exit_code == ExitCode.USAGE and "--page-size" in result.output
    result = invoke(url, "alarms", "--since", "yesterday")
    assert result.exit_code == ExitCode.FAILED and "startTime" in result.output
    unknown = CliRunner().invoke(main, ["workers", "--server", url, "--namespace", NS, "--group", "nope"])
    assert unknown.exit_code == ExitCode.FAILED and "groupId='nope'" in unknown.output
    half_key = invoke(url, "alarms", "--access-key-id", "SXKEY")
    assert half_key.exit_code == ExitCode.USAGE and "--access-key-secret" in half_key.output


def test_an_unreachable_scheduler_is_its_own_exit_code() -> None:
    with socket.socket() as sock:  # a port that was just free: nothing listens there
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = CliRunner().invoke(main, ["workers", "--server", f"http://127.0.0.1:{port}", "--timeout", "1"])
    assert result.exit_code == ExitCode.UNREACHABLE and "cannot connect" in result.output
