"""SQLite stays single-scheduler: a second ``sx-worker serve``, or an embedded scheduler in ``sx-worker
run``, on a SQLite file another scheduler holds exits at start naming the file and the holder's pid; once
the holder is SIGKILLed, a new scheduler starts on the same folder."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from sx.cli import ExitCode
from tests.e2e.conftest import DEADLINE, ROOT, START_TIMEOUT, Cluster, clean_env, sx_worker

pytestmark = pytest.mark.slow


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    """A running ``sx-worker serve`` on ``<tmp>/scheduler`` and no worker."""
    instance = Cluster(tmp_path)
    try:
        instance.start_scheduler()
        yield instance
    finally:
        instance.stop()


def _refused(args: list[str], *, cwd: Path = ROOT) -> str:
    """Run an ``sx-worker`` command that must fail to start; its output."""
    done = subprocess.run(
        [sx_worker(), *args], cwd=cwd, env=clean_env(), capture_output=True, text=True, timeout=START_TIMEOUT
    )
    output = done.stdout + done.stderr
    assert done.returncode == ExitCode.USAGE, output
    return output


def test_a_second_serve_is_refused_until_the_first_is_killed(cluster: Cluster) -> None:
    first = cluster.scheduler
    assert first is not None
    data = cluster.folder / "scheduler"
    database = data.resolve() / "scheduler.db"
    held = f"the SQLite database {database} is in use by another scheduler (pid {first.pid} "
    free_ports = ["--http-port", "0", "--grpc-port", "0"]

    assert held in _refused(["serve", "--data-dir", str(data), *free_ports])
    # The same file by a relative sqlite:// URL.
    url = "sqlite:///scheduler/scheduler.db"
    assert held in _refused(["serve", "--database-url", url, *free_ports], cwd=cluster.folder)
    assert first.alive()  # the refused ones changed nothing for it

    first.signal(signal.SIGKILL)
    first.wait(timeout=DEADLINE)
    cluster.start_scheduler()  # same folder and ports; waits until it listens


def test_an_embedded_scheduler_is_refused_while_serve_holds_the_data_dir(cluster: Cluster) -> None:
    assert cluster.scheduler is not None
    data = cluster.folder / "scheduler"
    output = _refused(
        ["run", "tests.e2e.jobs", "--data-dir", str(data), "--http-port", "0", "--grpc-port", "0"]
    )
    assert (
        f"cannot start the embedded scheduler: the SQLite database {data.resolve() / 'scheduler.db'} "
        f"is in use by another scheduler (pid {cluster.scheduler.pid} "
    ) in output
