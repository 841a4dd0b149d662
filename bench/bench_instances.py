"""Standalone instances per second, end to end: ExecuteJob over HTTP until the scheduler stores SUCCESS.

    .venv/bin/python bench/bench_instances.py [--instances 5000] [--connections 50] [--clients 2]
        [--workers 2] [--repeat 3] [--peer] [--url postgresql://...] [--execute-only]

A scheduler (``sx-worker serve``, SQLite) and ``--workers`` worker processes (``sx-worker run
bench_instances``, which imports this file as a module for its no-op processor) run on 127.0.0.1.

The load generator is ``--clients`` processes sharing ``--connections`` keep-alive HTTP/1.1 connections,
each a bare asyncio protocol (a fixed request, the response read by its Content-Length), so that it costs
a small fraction of what the server does per call. Each run first prints the generator's own ceiling: the
same processes and connections calling a trivial endpoint of the same server (``/health/live``) for a
second. Then ``--instances`` ExecuteJob calls go out back to back; finished instances are counted from
the scheduler's ``sx_scheduler_instances_finished`` counter (``/metrics``, SUCCESS only: a run where
any instance ends otherwise stops), so the scheduler keeps its
default history. Printed per run: the ExecuteJob rate with its p50/p99 latency, the end-to-end rate
(first call to last finish), failures, and the CPU each process spent per instance; then the medians.

``--execute-only`` measures ExecuteJob alone: no workers, the instances wait (the scheduler's answer is
what is timed), each run on a job of its own. ``--url`` runs the same on a fresh database of that
PostgreSQL server beside SQLite.
``--peer`` (the ``bench`` extra) runs Celery on the local Redis in the same run: a no-op task,
``apply_async`` from the same number of client processes until every result is stored, 2 worker
processes (prefork, concurrency 2), and prints the ratio to it.
Run it alone on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import re
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _cluster import GROUP, HERE, NS, clean_env, cluster

from sx.processors import JobContext, Processor, processor

DEFAULT_PG_URL = os.environ.get("SX_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
CELERY_BROKER = "redis://127.0.0.1:6379/14"
CELERY_BACKEND = "redis://127.0.0.1:6379/15"


@processor(name="bench.noop", max_concurrency=1_000_000)
class Noop(Processor):
    """Does nothing."""

    async def process(self, ctx: JobContext) -> None:
        return None


def _celery_app() -> Any:
    """The peer's Celery app with its no-op task ``bench.noop``."""
    from celery import Celery

    app = Celery("bench_instances", broker=CELERY_BROKER, backend=CELERY_BACKEND)
    app.conf.update(worker_prefetch_multiplier=64, result_expires=600)
    app.task(name="bench.noop")(_celery_noop)
    return app


def _celery_noop() -> None:
    return None


if os.environ.get("SX_BENCH_CELERY"):  # the Celery workers import this module with it set
    celery_app = _celery_app()


# -- the load generator ---------------------------------------------------------------------------


class _Http(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection sending a fixed request and reading each response whole."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.waiter: asyncio.Future[bytes] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        self._complete()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError(f"connection lost: {exc}"))

    def _complete(self) -> None:
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0 or self.waiter is None:
            return
        head = bytes(self.buffer[:end]).lower()
        match = re.search(rb"content-length: *(\d+)", head)
        size = int(match.group(1)) if match else 0
        if len(self.buffer) < end + 4 + size:
            return
        response = bytes(self.buffer[: end + 4 + size])
        del self.buffer[: end + 4 + size]
        waiter, self.waiter = self.waiter, None
        waiter.set_result(response)

    async def call(self, request: bytes) -> bytes:
        assert self.transport is not None
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(request)
        return await self.waiter


def _request(method: str, path: str, host: str, body: str = "") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}", "Connection: keep-alive"]
    if body:
        lines += ["Content-Type: application/x-www-form-urlencoded", f"Content-Length: {len(body)}"]
    return ("\r\n".join(lines) + "\r\n\r\n" + body).encode()


@dataclass(frozen=True)
class _Load:
    host: str
    port: int
    request: bytes
    calls: int
    """Calls this process makes, or 0 to call until ``seconds`` pass."""
    seconds: float
    connections: int


def _client_process(load: _Load, ready: Any, go: Any, results: Any) -> None:
    """One generator process: connect, wait for the start, call, report (count, failures, latencies,
    first start, last end, own CPU seconds)."""

    async def run() -> tuple[int, int, list[float], float, float]:
        loop = asyncio.get_running_loop()
        protocols = []
        for _ in range(load.connections):
            _, protocol = await loop.create_connection(_Http, load.host, load.port)
            protocols.append(protocol)
        ready.release()
        await loop.run_in_executor(None, go.wait)
        latencies: list[float] = []
        failures = 0
        remaining = load.calls
        started = time.perf_counter()
        deadline = started + load.seconds

        async def connection(protocol: _Http) -> None:
            nonlocal remaining, failures
            while True:
                if load.calls:
                    if remaining <= 0:
                        return
                    remaining -= 1
                elif time.perf_counter() >= deadline:
                    return
                sent = time.perf_counter()
                response = await protocol.call(load.request)
                latencies.append(time.perf_counter() - sent)
                if not response.startswith(b"HTTP/1.1 200") or b'"success":true' not in response:
                    failures += 1

        await asyncio.gather(*(connection(p) for p in protocols))
        return len(latencies), failures, latencies, started, time.perf_counter()

    cpu = time.process_time()
    count, failures, latencies, started, ended = asyncio.run(run())
    results.put((count, failures, latencies, started, ended, time.process_time() - cpu))


@dataclass(frozen=True)
class _LoadResult:
    calls: int
    failures: int
    latencies: list[float]
    started: float
    ended: float
    cpu: float

    @property
    def rate(self) -> float:
        return self.calls / (self.ended - self.started)

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000 if ordered else 0.0


def _generate(
    base_url: str, path: str, body: str, *, calls: int, seconds: float, clients: int, connections: int
) -> _LoadResult:
    """Run the generator processes against ``base_url``: ``calls`` in all (or for ``seconds``)."""
    host, _, port = base_url.removeprefix("http://").partition(":")
    request = _request("POST" if body else "GET", path, f"{host}:{port}", body)
    ctx = mp.get_context("fork")
    ready, go, results = ctx.Semaphore(0), ctx.Event(), ctx.Queue()
    procs = []
    for n in range(clients):
        share = calls // clients + (1 if n < calls % clients else 0)
        conns = connections // clients + (1 if n < connections % clients else 0)
        load = _Load(host, int(port), request, share, seconds, conns)
        procs.append(ctx.Process(target=_client_process, args=(load, ready, go, results), daemon=True))
    for proc in procs:
        proc.start()
    for _ in procs:
        ready.acquire()
    go.set()
    parts = [results.get() for _ in procs]
    for proc in procs:
        proc.join()
    return _LoadResult(
        calls=sum(p[0] for p in parts),
        failures=sum(p[1] for p in parts),
        latencies=[x for p in parts for x in p[2]],
        started=min(p[3] for p in parts),
        ended=max(p[4] for p in parts),
        cpu=sum(p[5] for p in parts),
    )


# -- the measured system --------------------------------------------------------------------------


def _cpu_seconds(pid: int) -> float:
    """User plus system CPU seconds of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _finished(client: Any) -> tuple[int, int]:
    """Instances finished since the scheduler started (its Prometheus counter): (SUCCESS, any other
    status)."""
    text = client.get("/metrics").text
    counts = [0.0, 0.0]
    for line in text.splitlines():
        if line.startswith("sx_scheduler_instances_finished_total"):
            counts['status="success"' not in line] += float(line.rpartition(" ")[2])
    return int(counts[0]), int(counts[1])


def _wait_finished(client: Any, total: int, timeout: float = 300) -> float:
    """Wait until ``total`` instances succeeded; exits when any ended otherwise."""
    deadline = time.monotonic() + timeout
    while (done := _finished(client))[0] < total:
        if done[1]:
            raise SystemExit(f"{done[1]} instances did not succeed (the run is void)")
        if time.monotonic() > deadline:
            raise SystemExit(f"only {done[0]} of {total} instances succeeded in {timeout:.0f} s")
        time.sleep(0.1)  # a light poll: /metrics is served by the measured scheduler
    return time.perf_counter()


@dataclass
class _Run:
    ceiling: float
    execute: _LoadResult
    end_to_end: float | None
    cpu_ms: dict[str, float]


def _run_once(running: Any, job_id: int, args: argparse.Namespace, warm: int) -> tuple[_Run, int]:
    import httpx

    body = f"namespace={NS}&groupId={GROUP}&jobId={job_id}"
    load = {"clients": args.clients, "connections": args.connections}
    ceiling = _generate(running.base_url, "/health/live", "", calls=0, seconds=1.0, **load)
    with httpx.Client(base_url=running.base_url, timeout=30) as monitor:
        before = {
            f"{'scheduler' if n == 0 else f'worker-{n - 1}'}": _cpu_seconds(p.pid)
            for n, p in enumerate(running.procs)
        }
        result = _generate(
            running.base_url, "/openapi/v1/job/execute", body, calls=args.instances, seconds=0, **load
        )
        ended = None if args.execute_only else _wait_finished(monitor, warm + args.instances)
        after = {name: _cpu_seconds(p.pid) for name, p in zip(before, running.procs, strict=True)}
    cpu_ms = {name: (after[name] - before[name]) * 1000 / args.instances for name in before}
    cpu_ms["generator"] = result.cpu * 1000 / args.instances
    end_to_end = None if ended is None else args.instances / (ended - result.started)
    return _Run(ceiling.rate, result, end_to_end, cpu_ms), warm + args.instances


def _bench_sx(args: argparse.Namespace, folder: Path, label: str, env: Mapping[str, str]) -> list[_Run]:
    from sx.processors import definition_of
    from sx.worker import SyncOpenApiClient

    workers = 0 if args.execute_only else args.workers
    folder.mkdir()
    with cluster(
        folder, "bench_instances", workers=workers, concurrency=args.concurrency, scheduler_env=env
    ) as running:
        import httpx

        with SyncOpenApiClient(running.base_url, namespace=NS, group_id=GROUP, timeout=60) as client:
            job_id = client.create_job(definition_of(Noop).spec)
            if workers:
                # Warm-up until every worker has run instances: that also proves they all registered.
                warm, deadline = 0, time.monotonic() + 60
                with httpx.Client(base_url=running.base_url, timeout=30) as monitor:
                    while True:
                        for _ in range(50):
                            client.execute_job(job_id)
                        warm += 50
                        _wait_finished(monitor, warm)
                        page = client.list_instances(job_id, page_size=100)
                        if len({i.work_addr for i in page.instances}) >= workers:
                            break
                        if time.monotonic() > deadline:
                            raise SystemExit("not every worker took instances within 60 s")
            else:
                warm = 0
        runs = []
        for n in range(args.repeat):
            if args.execute_only and n:
                # A job of its own per run: without workers its instances stay active, and ExecuteJob
                # counts the job's active instances against maxConcurrency.
                spec = definition_of(Noop).spec
                with SyncOpenApiClient(running.base_url, namespace=NS, group_id=GROUP) as client:
                    job_id = client.create_job(spec.model_copy(update={"name": f"{spec.name}-{n}"}))
            run, warm = _run_once(running, job_id, args, warm)
            runs.append(run)
            _print_run(f"{label} run {n + 1}", run)
    return runs


def _print_run(label: str, run: _Run) -> None:
    e = run.execute
    line = (
        f"{label:<22} generator ceiling {run.ceiling:7.0f}/s | ExecuteJob {e.rate:6.0f}/s "
        f"p50 {e.percentile(0.5):5.1f} ms p99 {e.percentile(0.99):6.1f} ms failed {e.failures}"
    )
    if run.end_to_end is not None:
        line += f" | end to end {run.end_to_end:6.0f} instances/s"
    cpu = " ".join(f"{name} {ms:.2f}" for name, ms in run.cpu_ms.items())
    print(line + f"\n{'':<22} CPU ms per instance: {cpu}", flush=True)


def _median(values: list[float]) -> float:
    return statistics.median(values)


def _summary(label: str, runs: list[_Run]) -> dict[str, float]:
    figures = {
        "ceiling": _median([r.ceiling for r in runs]),
        "execute": _median([r.execute.rate for r in runs]),
        "p99": _median([r.execute.percentile(0.99) for r in runs]),
    }
    line = (
        f"{label:<22} median: generator ceiling {figures['ceiling']:7.0f}/s | ExecuteJob "
        f"{figures['execute']:6.0f}/s p99 {figures['p99']:6.1f} ms"
    )
    if runs[0].end_to_end is not None:
        figures["e2e"] = _median([r.end_to_end or 0.0 for r in runs])
        line += f" | end to end {figures['e2e']:6.0f} instances/s"
    print(line, flush=True)
    return figures


# -- the peer: Celery over the local Redis ---------------------------------------------------------


def _celery_client(calls: int, ready: Any, go: Any, results: Any) -> None:
    task = _celery_app().tasks["bench.noop"]
    task.apply_async()  # connect before the start
    ready.release()
    go.wait()
    started = time.perf_counter()
    for _ in range(calls - 1):
        task.apply_async()
    results.put(started)


@contextmanager
def _celery_workers(folder: Path) -> Iterator[subprocess.Popen[bytes]]:
    celery = str(Path(sys.executable).parent / "celery")
    args = [celery, "-A", "bench_instances:celery_app", "worker", "-c", "2", "-P", "prefork"]
    args += ["--without-heartbeat", "--without-gossip", "--without-mingle", "-l", "warning"]
    with (folder / "celery.log").open("wb") as sink:
        proc = subprocess.Popen(
            args, cwd=HERE, env={**clean_env(), "SX_BENCH_CELERY": "1"}, stdout=sink, stderr=subprocess.STDOUT
        )
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


def _bench_celery(args: argparse.Namespace, folder: Path) -> list[float]:
    import redis

    backend = redis.Redis.from_url(CELERY_BACKEND)
    broker = redis.Redis.from_url(CELERY_BROKER)
    broker.flushdb()
    backend.flushdb()
    rates = []
    ctx = mp.get_context("fork")
    with _celery_workers(folder):
        expected = 0
        for n in range(args.repeat + 1):  # the first round warms the workers up
            calls = args.instances if n else 200
            ready, go, results = ctx.Semaphore(0), ctx.Event(), ctx.Queue()
            shares = [
                calls // args.clients + (1 if i < calls % args.clients else 0) for i in range(args.clients)
            ]
            procs = [
                ctx.Process(target=_celery_client, args=(s, ready, go, results), daemon=True) for s in shares
            ]
            for proc in procs:
                proc.start()
            for _ in procs:
                ready.acquire()
            expected += calls
            go.set()
            starts = [results.get() for _ in procs]
            deadline = time.monotonic() + 300
            while backend.dbsize() < expected:
                if time.monotonic() > deadline:
                    raise SystemExit(f"Celery stored {backend.dbsize()} of {expected} results")
                time.sleep(0.02)
            ended = time.perf_counter()
            for proc in procs:
                proc.join()
            if n:
                rates.append(calls / (ended - min(starts)))
                print(f"{'celery run ' + str(n):<22} end to end {rates[-1]:6.0f} tasks/s", flush=True)
    broker.flushdb()
    backend.flushdb()
    return rates


# -- main -----------------------------------------------------------------------------------------


def _fresh_database(url: str) -> tuple[str, Any]:
    import asyncpg

    async def create() -> str:
        admin = await asyncpg.connect(url, timeout=10)
        name = f"sx_bench_{int(time.time())}_{secrets.token_hex(3)}"
        await admin.execute(f'CREATE DATABASE "{name}"')
        await admin.close()
        return name

    async def drop(name: str) -> None:
        admin = await asyncpg.connect(url, timeout=10)
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()

    name = asyncio.run(create())
    return re.sub(r"/[^/]*$", f"/{name}", url), lambda: asyncio.run(drop(name))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--instances", type=int, default=5000, help="ExecuteJob calls per run")
    parser.add_argument("--connections", type=int, default=50, help="HTTP connections in all")
    parser.add_argument("--clients", type=int, default=2, help="load generator processes")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=64, help="per worker")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--execute-only", action="store_true", help="ExecuteJob alone, no workers")
    parser.add_argument("--peer", action="store_true", help="Celery over the local Redis, in the same run")
    parser.add_argument(
        "--url", nargs="?", const=DEFAULT_PG_URL, help="also on PostgreSQL (a fresh database)"
    )
    args = parser.parse_args()
    figures: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="sx-bench-") as tmp:
        figures["sqlite"] = _summary("sqlite", _bench_sx(args, Path(tmp) / "sqlite", "sqlite", {}))
        if args.url:
            database_url, drop = _fresh_database(args.url)
            try:
                runs = _bench_sx(args, Path(tmp) / "pg", "postgresql", {"SX_DATABASE_URL": database_url})
            finally:
                drop()
            figures["postgresql"] = _summary("postgresql", runs)
        if args.peer and not args.execute_only:
            (Path(tmp) / "celery").mkdir()
            celery = _median(_bench_celery(args, Path(tmp) / "celery"))
            print(f"{'celery':<22} median: end to end {celery:6.0f} tasks/s")
            for label, figure in figures.items():
                print(f"{label:<22} end to end / celery: {figure['e2e'] / celery:.2f}x")


if __name__ == "__main__":
    main()
