"""Mistakes a new user makes on a first run, each answered with a clear message: config files with
one table, a flat file or a misspelt name; a taken port; ``--server`` in its old meaning of a URL; and
``--help`` naming every option's default and ``SX_`` twin."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from sx.cli import ExitCode
from sx.cli._main import main
from sx.processors import Registry, use_registry, use_workflows
from sx.worker.openapi import SyncOpenApiClient
from tests.worker.openapi.test_client import threaded_scheduler


@pytest.fixture
def fresh_registry(monkeypatch: pytest.MonkeyPatch) -> Iterator[Registry]:
    """An empty registry that ``examples.hello`` registers into again when a test imports it."""
    monkeypatch.delitem(sys.modules, "examples.hello", raising=False)
    with use_registry(Registry()) as registry, use_workflows():
        yield registry


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# -- bug 1: config files ---------------------------------------------------------------------------


def test_serve_reads_a_file_with_only_a_worker_table(tmp_path: Path, taken_port: int) -> None:
    # The file was refused ("worker={...}: unknown setting"); now serve gets past it to the port.
    config = write(tmp_path / "sx.toml", '[worker]\ngroup_id = "billing"\n')
    args = ["serve", "--config", str(config), "--data-dir", str(tmp_path), "--grpc-port", "0"]
    result = CliRunner().invoke(main, [*args, "--http-port", str(taken_port)])
    assert "unknown setting" not in result.output
    assert result.exit_code == ExitCode.USAGE, result.output
    assert f"cannot listen for the OpenAPI on 127.0.0.1:{taken_port}" in result.output


def test_run_embedded_reads_a_flat_file_for_the_worker_and_the_scheduler(
    tmp_path: Path, taken_port: int, fresh_registry: Registry
) -> None:
    # group_id is the worker's, http_port the embedded scheduler's: each takes its own keys.
    config = write(tmp_path / "sx.toml", f'group_id = "billing"\nhttp_port = {taken_port}\ngrpc_port = 0\n')
    result = CliRunner().invoke(
        main, ["run", "examples.hello", "--config", str(config), "--data-dir", str(tmp_path)]
    )
    assert result.exit_code == ExitCode.USAGE, result.output
    assert "unknown setting" not in result.output
    assert f"cannot listen for the OpenAPI on 127.0.0.1:{taken_port}" in result.output


def test_check_reports_every_unknown_table_and_key_at_once_with_suggestions(tmp_path: Path) -> None:
    config = write(
        tmp_path / "sx.toml",
        '[worker]\ngroup = "billing"\nnamespace = "ns"\n\n[sheduler]\nhttp_port = 8080\n\n'
        "[scheduler]\nhistory_kept = 10\n",
    )
    result = CliRunner().invoke(main, ["check", "--config", str(config)])
    assert result.exit_code == ExitCode.FAILED, result.output
    assert "[worker] group: unknown setting (did you mean group_id?)" in result.output
    assert "[sheduler]: unknown table (did you mean scheduler?)" in result.output
    assert "[scheduler] history_kept: unknown setting (did you mean history_keep?)" in result.output


def test_a_flat_file_key_known_to_no_part_is_named(tmp_path: Path) -> None:
    config = write(tmp_path / "sx.json", '{"group_id": "g", "concurrancy": 4}')
    result = CliRunner().invoke(main, ["check", "--config", str(config)])
    assert result.exit_code == ExitCode.FAILED
    assert "concurrancy: unknown setting (did you mean concurrency?)" in result.output


# -- bug 3: a taken port, named by run and serve ---------------------------------------------------


def test_serve_on_a_taken_grpc_port_names_it(tmp_path: Path, taken_port: int) -> None:
    args = ["serve", "--data-dir", str(tmp_path), "--http-port", "0", "--grpc-port", str(taken_port)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == ExitCode.USAGE, result.output
    assert f"cannot listen for gRPC on 127.0.0.1:{taken_port}" in result.output
    assert "Traceback" not in result.output


def test_run_on_a_taken_grpc_port_names_it(tmp_path: Path, taken_port: int, fresh_registry: Registry) -> None:
    args = ["run", "examples.hello", "--data-dir", str(tmp_path), "--http-port", "0"]
    result = CliRunner().invoke(main, [*args, "--grpc-port", str(taken_port)])
    assert result.exit_code == ExitCode.USAGE, result.output
    assert f"cannot listen for gRPC on 127.0.0.1:{taken_port}" in result.output


# -- bug 4: --server is gRPC, --openapi the URL ----------------------------------------------------


def test_openapi_verbs_take_openapi_and_still_take_server_with_a_warning(tmp_path: Path) -> None:
    with threaded_scheduler(tmp_path) as url:
        with SyncOpenApiClient(url, namespace="default", group_id="default") as client:
            client.ensure_group()
        new = CliRunner().invoke(main, ["workers", "--openapi", url, "--output", "json"])
        assert new.exit_code == 0, new.output
        assert "deprecated" not in new.stderr
        old = CliRunner().invoke(main, ["workers", "--server", url, "--output", "json"])
        assert old.exit_code == 0, old.output
        assert "--server URL is deprecated here: use --openapi URL" in old.stderr
        assert old.stdout == new.stdout
        # A given flag wins over the environment, in either spelling.
        env = {"SX_OPENAPI_URL": "http://127.0.0.1:9"}
        assert CliRunner(env=env).invoke(main, ["jobs", "list", "--server", url]).exit_code == 0
        assert CliRunner(env=env).invoke(main, ["jobs", "list", "--openapi", url]).exit_code == 0


def test_an_openapi_verb_without_a_url_says_which_option_is_missing() -> None:
    result = CliRunner(env={"SX_OPENAPI_URL": None}).invoke(main, ["jobs", "list"])
    assert result.exit_code == ExitCode.USAGE
    assert "Missing option '--openapi' (or SX_OPENAPI_URL)" in result.output


# -- --help: every option's default and SX_ twin ---------------------------------------------------


def _commands(command: click.Command, path: tuple[str, ...] = ()) -> Iterator[tuple[str, click.Command]]:
    if isinstance(command, click.Group):
        for name, sub in command.commands.items():
            yield from _commands(sub, (*path, name))
    else:
        yield " ".join(path), command


def test_help_shows_every_options_default_and_env_twin() -> None:
    missing = []
    for name, command in _commands(main):
        ctx = click.Context(command, info_name=name)
        for param in command.get_params(ctx):
            if not isinstance(param, click.Option) or param.hidden or param.is_eager:
                continue
            record = param.get_help_record(ctx)
            assert record is not None
            text = record[1]
            if "env var: SX_" not in text:
                missing.append(f"{name} {record[0]}: no SX_ twin")
            default = param.get_default(ctx, call=False)  # click's UNSET when there is none
            has_default = isinstance(default, str | int | float | Path) and not isinstance(default, bool)
            if has_default and "default: " not in text:
                missing.append(f"{name} {record[0]}: no default")
    assert missing == []


@pytest.mark.parametrize(
    ("verb", "flags"),
    [
        (
            "run",
            ["--advertise-host", "--peer-host", "--peer-port", "--label", "--shutdown-grace", "--tls-ca",
             "--tls-cert", "--tls-key", "--worker-id", "--thread-pool-size", "--group", "--app-key"],
        ),
        (
            "serve",
            ["--history-keep", "--no-worker-grace", "--tls-cert", "--tls-client-ca", "--alarm-webhook-url",
             "--heartbeat-timeout", "--database-url"],
        ),
        ("check", ["--tls-ca", "--advertise-host", "--app-key"]),
    ],
)  # fmt: skip
def test_settings_without_a_flag_before_have_one_now(verb: str, flags: list[str]) -> None:
    result = CliRunner().invoke(main, [verb, "--help"], terminal_width=200)
    assert result.exit_code == 0
    for flag in flags:
        assert f"  {flag} " in result.output, flag
    assert "[env var: SX_PEER_PORT; default: 0]" in result.output or verb == "serve"


def test_setting_flags_reach_the_settings() -> None:
    result = CliRunner().invoke(main, ["check", "--label", "zone=a", "--shutdown-grace", "-1"])
    assert result.exit_code == ExitCode.FAILED, result.output
    assert "invalid worker settings: shutdown_grace=-1.0" in result.output
    result = CliRunner().invoke(main, ["check", "--label", "zone"])
    assert result.exit_code == ExitCode.USAGE
    assert "'zone': expected KEY=VALUE" in result.output


def test_python_dash_m_sx_runs_the_command() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "sx", "jobs", "--help"], capture_output=True, text=True, check=False, cwd="/"
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("Usage: python -m sx jobs [OPTIONS] COMMAND")
