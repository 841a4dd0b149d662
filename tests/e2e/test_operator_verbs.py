"""The operator verbs (``jobs``, ``instances``, ``workflows``) as real processes against a real
``sx-worker run`` (embedded scheduler) serving the examples: text and ``--output json``, the exit codes,
``instances watch`` with per-task-name progress of a map job, and signed requests."""

from __future__ import annotations

import json
import os
import pty
import re
import subprocess
from collections.abc import Iterator

import pytest

from sx.cli import ExitCode
from tests.e2e.conftest import ROOT, START_TIMEOUT, Proc, clean_env, spawn, sx_worker, wait_for

pytestmark = pytest.mark.slow

_OPENAPI_LINE = re.compile(r"^\s*OpenAPI\s+(http://\S+)", re.MULTILINE)
_TARGETS = ("examples.parallel", "examples.workflow")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``sx-worker run`` of the examples with its embedded scheduler; yields the OpenAPI URL."""
    folder = tmp_path_factory.mktemp("operator")
    env = clean_env(SX_HTTP_PORT="0", SX_GRPC_PORT="0", SX_DATA_DIR=str(folder / "data"))
    proc: Proc = spawn("embedded", [sx_worker(), "run", *_TARGETS], folder=folder, env=env)

    def url() -> str | None:
        if not proc.alive():
            raise AssertionError(f"sx-worker run exited:\n{proc.tail()}")
        found = _OPENAPI_LINE.search(proc.output())
        return found.group(1) if found and "registered with scheduler" in proc.output() else None

    try:
        yield wait_for(url, within=START_TIMEOUT, what="the embedded scheduler and its worker")
    finally:
        proc.stop()


def sx(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sx_worker(), *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=clean_env(**(env or {})),
        timeout=120,
        check=False,
    )


def ok_json(*args: str) -> object:
    done = sx(*args, "--output", "json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_jobs_list_get_and_state_verbs(served: str) -> None:
    page = ok_json("jobs", "list", "--openapi", served)
    assert isinstance(page, dict)
    names = {job["name"]: job for job in page["jobs"]}
    assert {"examples.parallel", "examples.extract", "examples.load"} <= set(names)
    table = sx("jobs", "list", "--openapi", served)
    assert table.returncode == 0
    assert table.stdout.splitlines()[0].split() == ["ID", "NAME", "STATUS", "MODE", "SCHEDULE", "MANAGED"]

    job = ok_json("jobs", "get", "examples.parallel", "--openapi", served)
    assert isinstance(job, dict)
    assert (job["jobId"], job["executeMode"]) == (names["examples.parallel"]["jobId"], "parallel")

    extract = str(names["examples.extract"]["jobId"])
    assert ok_json("jobs", "disable", extract, "--openapi", served) == {
        "jobId": int(extract),
        "action": "disable",
    }
    assert ok_json("jobs", "get", extract, "--openapi", served)["status"] == 0  # type: ignore[index]
    assert sx("jobs", "enable", extract, "--openapi", served).returncode == 0
    assert ok_json("jobs", "get", extract, "--openapi", served)["status"] == 1  # type: ignore[index]


def test_execute_and_watch_a_map_job_in_plain_lines(served: str) -> None:
    started = ok_json("jobs", "execute", "examples.parallel", "--openapi", served)
    assert isinstance(started, dict)
    job_id, instance_id = started["jobId"], started["instanceId"]
    # stdout is a pipe here, not a terminal: plain lines, one set each time something changed.
    watched = sx(
        "instances", "watch", str(job_id), str(instance_id), "--openapi", served, "--interval", "0.2"
    )
    assert watched.returncode == 0, watched.stdout + watched.stderr
    lines = watched.stdout.splitlines()
    assert f"instance {instance_id} of job {job_id}: SUCCESS" in "\n".join(lines)
    assert "  Account: 3/3 finished (0 failed, 0 running)" in lines
    assert "  result: 3 accounts refreshed" in lines
    assert "\x1b[" not in watched.stdout  # no terminal control codes

    detail = ok_json("instances", "get", "examples.parallel", str(instance_id), "--openapi", served)
    assert isinstance(detail, dict)
    assert detail["status"] == 4
    assert {"taskName": "Account", "total": 3, "done": 3, "failed": 0, "running": 0} in detail["tasks"]
    listed = ok_json("instances", "list", "examples.parallel", "--status", "success", "--openapi", served)
    assert instance_id in [i["instanceId"] for i in listed["instances"]]  # type: ignore[index]
    stopped = sx("instances", "stop", str(job_id), str(instance_id), "--openapi", served)
    assert stopped.returncode == ExitCode.FAILED  # the scheduler refuses: there is nothing to stop
    assert "already finished" in stopped.stderr

    again = ok_json("instances", "rerun", "examples.parallel", str(instance_id), "--openapi", served)
    assert isinstance(again, dict)
    assert again["rerunOf"] == instance_id and again["instanceId"] != instance_id
    final = ok_json("instances", "watch", str(job_id), str(again["instanceId"]), "--openapi", served)
    assert isinstance(final, dict)
    assert (final["status"], final["triggerType"]) == (4, 4)  # SUCCESS, a manual re-run


def test_workflows_list_execute_and_instances(served: str) -> None:
    page = ok_json("workflows", "list", "--openapi", served)
    assert isinstance(page, dict)
    [nightly] = [w for w in page["workflows"] if w["name"] == "examples.nightly-etl"]
    started = ok_json("workflows", "execute", nightly["name"], "--openapi", served)
    assert started["workflowId"] == nightly["workflowId"]  # type: ignore[index]
    wf_instance = started["wfInstanceId"]  # type: ignore[index]
    listed = ok_json("workflows", "instances", str(nightly["workflowId"]), "--openapi", served)
    assert wf_instance in [i["wfInstanceId"] for i in listed["instances"]]  # type: ignore[index]


def test_exit_codes(served: str) -> None:
    assert sx("jobs", "get", "999999", "--openapi", served).returncode == ExitCode.NOT_FOUND
    missing = sx("jobs", "get", "no.such.job", "--openapi", served)
    assert missing.returncode == ExitCode.NOT_FOUND
    assert "no job named 'no.such.job'" in missing.stderr
    no_instance = sx("instances", "get", "examples.parallel", "999999", "--openapi", served)
    assert no_instance.returncode == ExitCode.NOT_FOUND, no_instance.stderr
    assert sx("jobs", "list", "--openapi", "http://127.0.0.1:9", "--timeout", "1").returncode == (
        ExitCode.UNREACHABLE
    )
    assert sx("jobs", "list").returncode == ExitCode.USAGE  # no --openapi
    half_key = sx("jobs", "list", "--openapi", served, "--access-key-id", "k")
    assert half_key.returncode == ExitCode.USAGE
    assert "--access-key-secret" in half_key.stderr


def test_watch_on_a_terminal_draws_a_live_table(served: str) -> None:
    started = ok_json("jobs", "execute", "examples.parallel", "--openapi", served)
    assert isinstance(started, dict)
    leader, follower = pty.openpty()
    args = ["instances", "watch", str(started["jobId"]), str(started["instanceId"]), "--openapi", served]
    with subprocess.Popen(
        [sx_worker(), *args], stdout=follower, stderr=follower, cwd=ROOT, env=clean_env(COLUMNS="100")
    ) as proc:
        os.close(follower)
        drawn = b""
        while True:
            try:
                chunk = os.read(leader, 4096)
            except OSError:  # the terminal closed: the command ended
                break
            if not chunk:
                break
            drawn += chunk
        assert proc.wait(timeout=60) == 0, drawn.decode(errors="replace")
    os.close(leader)
    text = drawn.decode(errors="replace")
    assert "\x1b[" in text  # drawn with terminal control codes, in place
    assert "Account" in text and "3/3" in text and "SUCCESS" in text
