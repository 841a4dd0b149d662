"""A worker process given two scheduler addresses (``--server A,B``) follows whichever answers, without
a restart, and an instance it runs while its scheduler goes away keeps running and reports its end to
the scheduler it registers with next.

Two ``sx-worker serve`` processes with their own stores (X and Y) and the same group and app key. The
worker starts while nothing listens at A and registers at B (store Y); B is killed (SIGKILL) and store X
started at A, and the worker registers at A. There two instances start; A is killed while they run and
store X is started again at B's address: one store reached at another address, where both final
reports must arrive, the one made while no scheduler was up (re-sent at the registration) and the one
made after.
"""

from __future__ import annotations

import re
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from sx.processors import InstanceStatus, Registry, use_registry
from sx.worker import OpenApiClient, SyncOpenApiClient
from tests.e2e.conftest import (
    GROUP,
    NAMESPACE,
    START_TIMEOUT,
    Proc,
    clean_env,
    spawn,
    sx_worker,
    wait_final,
    wait_for,
    wait_status,
)

pytestmark = pytest.mark.slow

# The definitions, kept out of the default registry other tests look at.
GATE_REGISTRY = Registry()
with use_registry(GATE_REGISTRY):
    from tests.e2e import gate_jobs  # noqa: F401

SERVE_LINE = re.compile(r"scheduler: OpenAPI (http://\S+) .*gRPC (\S+)")


class Schedulers:
    """``sx-worker serve`` processes of the test; each ``serve`` names its store and ports."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.procs: list[Proc] = []

    def serve(self, store: str, *, http_port: int = 0, grpc_port: int = 0) -> tuple[Proc, str, str]:
        """Start a scheduler on ``store``; the process, its OpenAPI URL and its gRPC address."""
        args = [sx_worker(), "serve", "--data-dir", str(self.folder / store)]
        args += ["--http-port", str(http_port), "--grpc-port", str(grpc_port)]
        env = clean_env(SX_HEARTBEAT_INTERVAL="1", SX_HEARTBEAT_TIMEOUT="10")
        proc = spawn(f"scheduler-{store}-{len(self.procs)}", args, folder=self.folder, env=env)
        self.procs.append(proc)

        def ready() -> re.Match[str] | None:
            if not proc.alive():
                raise AssertionError(f"{proc.name} exited with {proc.popen.returncode}:\n{proc.tail()}")
            return SERVE_LINE.search(proc.output())

        match = wait_for(ready, within=START_TIMEOUT, what=f"{proc.name} to listen")
        return proc, match.group(1), match.group(2)

    def stop(self) -> None:
        for proc in self.procs:
            proc.stop()


def port(url_or_address: str) -> int:
    return int(url_or_address.rpartition(":")[2])


def kill(proc: Proc) -> None:
    proc.signal(signal.SIGKILL)
    proc.wait(timeout=20)


@pytest.fixture
def schedulers(tmp_path: Path) -> Iterator[Schedulers]:
    running = Schedulers(tmp_path)
    try:
        yield running
    finally:
        running.stop()


async def test_the_worker_follows_the_scheduler_that_answers_and_its_instance_reports_there(
    tmp_path: Path, schedulers: Schedulers
) -> None:
    # A's address: store X's scheduler, stopped again once its group exists.
    x_first, a_http, a = schedulers.serve("x")
    with SyncOpenApiClient(a_http, namespace=NAMESPACE, group_id=GROUP) as client:
        app_key = client.ensure_group().app_key
    x_first.stop()
    # B's address: store Y's scheduler, with the same group and app key.
    y, b_http, b = schedulers.serve("y")
    with SyncOpenApiClient(b_http, namespace=NAMESPACE, group_id=GROUP) as client:
        client.create_namespace()
        client.create_group(app_key=app_key)

    worker_args = [sx_worker(), "run", "tests.e2e.gate_jobs", "--server", f"{a},{b}",
                   "--namespace", NAMESPACE, "--group", GROUP, "--app-key", app_key, "--no-sync"]  # fmt: skip
    env = clean_env(SX_DATA_DIR=str(tmp_path / "worker"), SX_WORKER_ID="e2e-failover", SX_SHUTDOWN_GRACE="5")
    worker = spawn("worker", worker_args, folder=tmp_path, env=env)
    try:

        def registrations(address: str) -> int:
            if not worker.alive():
                raise AssertionError(f"the worker exited with {worker.popen.returncode}:\n{worker.tail()}")
            return worker.output().count(f"registered with scheduler {address} as")

        def wait_registered(address: str, times: int) -> None:
            wait_for(
                lambda: registrations(address) >= times, within=START_TIMEOUT, what=f"registered at {address}"
            )

        # Nothing listens at A: the worker registers at B.
        wait_registered(b, 1)
        assert registrations(a) == 0

        # B dies; store X comes up at A: the same worker process registers there.
        kill(y)
        x, _, _ = schedulers.serve("x", http_port=port(a_http), grpc_port=port(a))
        wait_registered(a, 1)

        # Two instances run on the worker while A dies; store X comes back at B's address. One ends
        # while no scheduler is up (its final report waits to be re-sent), the other after.
        gates = [tmp_path / "gate-1", tmp_path / "gate-2"]
        async with OpenApiClient(a_http, namespace=NAMESPACE, group_id=GROUP) as api:
            job_id = await api.create_job(GATE_REGISTRY.get("e2e.gate").spec)
            instance_ids = [await api.execute_job(job_id, str(gate)) for gate in gates]
            for instance_id in instance_ids:
                await wait_status(api, job_id, instance_id, InstanceStatus.RUNNING)
        kill(x)
        registered_at_b = registrations(b)
        gates[0].touch()
        ended = [f"instance {instance_id} of job {job_id} ended SUCCESS" for instance_id in instance_ids]
        wait_for(lambda: ended[0] in worker.output(), within=START_TIMEOUT, what="the first instance to end")
        schedulers.serve("x", http_port=port(b_http), grpc_port=port(b))
        wait_registered(b, registered_at_b + 1)
        (owed,) = re.findall(
            rf"registered with scheduler {re.escape(b)} as \S+ \((\d+) report\(s\) to re-send\)",
            worker.output(),
        )[-1:]
        assert int(owed) >= 1
        gates[1].touch()

        async with OpenApiClient(b_http, namespace=NAMESPACE, group_id=GROUP) as api:
            for instance_id in instance_ids:
                detail = await wait_final(api, job_id, instance_id)
                # The runs that went on all along (attempt 0, the same process) are the ones that reported.
                assert detail.status is InstanceStatus.SUCCESS, detail
                assert detail.result == f"gate opened attempt=0 pid={worker.pid}"
        wait_for(lambda: ended[1] in worker.output(), within=START_TIMEOUT, what="the worker to log the end")
        assert [worker.output().count(line) for line in ended] == [1, 1]
        assert worker.alive()
    except BaseException:
        print("\n".join(f"----- {p.name} -----\n{p.tail()}" for p in [*schedulers.procs, worker]))
        raise
    finally:
        worker.stop()
