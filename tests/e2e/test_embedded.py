"""The README's main command, ``sx-worker run examples.hello``, as a real process with no --server.

It must start a scheduler inside the process (SQLite under ``.sx-data/`` of the working directory),
print its OpenAPI URL, register and run the example's cron job, and exit 0 on SIGTERM.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from sx.processors import InstanceStatus, TriggerType
from sx.worker.openapi import InstanceDetail, SyncOpenApiClient
from tests.e2e.conftest import DEADLINE, ROOT, START_TIMEOUT, Proc, clean_env, sx_worker, wait_for

pytestmark = pytest.mark.slow

_OPENAPI_LINE = re.compile(r"^\s*OpenAPI\s+(http://\S+)", re.MULTILINE)


@pytest.fixture
def app(tmp_path: Path) -> Path:
    """A working directory holding the examples package, as a checkout of the project would."""
    folder = tmp_path / "app"
    (folder / "examples").mkdir(parents=True)
    for name in ("__init__.py", "hello.py"):
        shutil.copy(ROOT / "examples" / name, folder / "examples" / name)
    return folder


@pytest.fixture
def hello(app: Path, tmp_path: Path) -> Iterator[Proc]:
    """``sx-worker run examples.hello`` started in ``app``; killed at the end if still running."""
    log = tmp_path / "embedded.log"
    # Ports chosen by the OS (the defaults 8080/9090 may be taken); the command line is the README's.
    env = clean_env(SX_HTTP_PORT="0", SX_GRPC_PORT="0")
    with log.open("ab") as sink:
        popen = subprocess.Popen(
            [sx_worker(), "run", "examples.hello"],
            cwd=app,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    proc = Proc("embedded", popen, log)
    try:
        yield proc
    finally:
        if proc.alive():
            proc.popen.kill()
            proc.popen.wait(timeout=10)


def alive(proc: Proc) -> None:
    if not proc.alive():
        raise AssertionError(f"sx-worker run exited with {proc.popen.returncode}:\n{proc.tail()}")


def test_run_with_no_server_embeds_a_scheduler_and_runs_the_example(app: Path, hello: Proc) -> None:
    def openapi_url() -> str | None:
        alive(hello)
        match = _OPENAPI_LINE.search(hello.output())
        return match.group(1) if match else None

    url = wait_for(openapi_url, within=START_TIMEOUT, what="the banner's OpenAPI URL")
    assert "(embedded)" in hello.output()

    with SyncOpenApiClient(url, namespace="default", group_id="default") as client:
        job = wait_for(
            lambda: client.find_job("examples.hello"), within=START_TIMEOUT, what="the job to be registered"
        )

        def succeeded() -> InstanceDetail | None:
            alive(hello)
            page = client.list_instances(job.job_id, statuses=[InstanceStatus.SUCCESS])
            return page.instances[0] if page.instances else None

        # The example fires every 10 seconds.
        done = wait_for(succeeded, within=DEADLINE, what="a successful instance of examples.hello")
    assert done.result == "hello, world"
    assert done.trigger_type == TriggerType.SCHEDULED

    hello.signal(signal.SIGTERM)
    assert hello.wait(timeout=30) == 0, hello.tail()
    # The store is the working directory's, where the README says it is.
    assert (app / ".sx-data" / "scheduler.db").is_file()
