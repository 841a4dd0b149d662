"""A scheduler (``sx-worker serve``, SQLite) and worker processes (``sx-worker run MODULE``) on 127.0.0.1,
for the benchmarks that measure the whole system. Each process logs to a file in the given folder."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
NS, GROUP = "bench", "bench"
_PORTS = ("--http-port", "0", "--grpc-port", "0")


def sx_worker() -> str:
    return str(Path(sys.executable).parent / "sx-worker")


def clean_env() -> dict[str, str]:
    """The environment without any ``SX_`` setting of the caller's, output unbuffered."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SX_")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def wait_output(log: Path, proc: subprocess.Popen[bytes], pattern: str, *, count: int = 1) -> re.Match[str]:
    """The ``count``-th match of ``pattern`` in the process's log; exits when it dies or 60 s pass."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace") if log.exists() else ""
        matches = list(re.finditer(pattern, text))
        if len(matches) >= count:
            return matches[-1]
        if proc.poll() is not None:
            raise SystemExit(f"{proc.args!r} exited with {proc.returncode}:\n{text[-3000:]}")
        time.sleep(0.05)
    raise SystemExit(f"timed out waiting for {pattern!r} in {log}")


@dataclass
class Cluster:
    base_url: str
    grpc_address: str
    app_key: str
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)


def _spawn(
    args: list[str], log: Path, env: Mapping[str, str], cwd: Path | None = None
) -> subprocess.Popen[bytes]:
    with log.open("wb") as sink:
        return subprocess.Popen(args, cwd=cwd, env=dict(env), stdout=sink, stderr=subprocess.STDOUT)


@contextmanager
def cluster(
    folder: Path,
    module: str,
    *,
    workers: int = 2,
    concurrency: int = 64,
    scheduler_env: Mapping[str, str] | None = None,
    worker_env: Mapping[str, str] | None = None,
) -> Iterator[Cluster]:
    """Start the scheduler and ``workers`` processes serving ``module`` (a file in bench/); stop them
    all (SIGTERM, then SIGKILL after 20 s) on leaving."""
    procs: list[subprocess.Popen[bytes]] = []
    try:
        log = folder / "scheduler.log"
        serve = _spawn(
            [sx_worker(), "serve", "--data-dir", str(folder / "data"), *_PORTS, "--log-level", "warning"],
            log,
            {**clean_env(), **(scheduler_env or {})},
        )
        procs.append(serve)
        match = wait_output(log, serve, r"scheduler: OpenAPI (http://\S+) .*gRPC (\S+)")
        base_url, grpc_address = match.group(1), match.group(2)
        from sx.worker import SyncOpenApiClient

        with SyncOpenApiClient(base_url, namespace=NS, group_id=GROUP) as client:
            app_key = client.ensure_group().app_key
        for n in range(workers):
            args = [sx_worker(), "run", module, "--server", grpc_address, "--namespace", NS, "--group", GROUP]
            args += ["--app-key", app_key, "--no-sync", "--concurrency", str(concurrency)]
            args += ["--log-level", "warning"]
            env = {**clean_env(), "SX_DATA_DIR": str(folder / f"worker-{n}"), **(worker_env or {})}
            procs.append(_spawn(args, folder / f"worker-{n}.log", env, cwd=HERE))
        yield Cluster(base_url, grpc_address, app_key, procs)
    finally:
        for proc in reversed(procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
