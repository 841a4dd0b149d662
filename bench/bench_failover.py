"""Scheduler replicas on PostgreSQL: fire lateness across replicas, and failover after an owner's death.

Three ``sx-worker serve`` replicas share a fresh PostgreSQL database (default settings: a 6 s lease
renewed every second), two ``sx-worker run`` workers serve one group and are given the three addresses,
and ``--jobs`` jobs are due every second. For ``--seconds`` the fires' lateness is measured (the
processor's start minus the schedule time, from the store, over every replica's fires). Then ``--kills``
times: the replica holding the group's lease is killed (SIGKILL) and the bench measures the time from the
kill to the new owner's lease and to the first instance the new owner's worker started; the killed
replica is started again at its ports before the next kill. Prints each figure, the medians, and the
instances that did not succeed.

    python bench/bench_failover.py [--jobs 100] [--seconds 20] [--kills 5] [--replicas 3] [--url postgresql://...]

``--replicas 1`` measures the lateness of a single scheduler on the same database and load (no kills),
for the ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import secrets
import signal
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import asyncpg
from _cluster import GROUP, HERE, NS, clean_env, sx_worker, wait_output

from sx.processors import JobContext, JobSpec, Processor, cron, processor
from sx.worker import SyncOpenApiClient

DEFAULT_URL = os.environ.get("SX_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


@processor(name="bench.failover.tick", max_concurrency=1_000_000)
class Tick(Processor):
    def process(self, ctx: JobContext) -> None:
        return None


class Replica:
    def __init__(
        self, folder: Path, database_url: str, serial: int, ports: tuple[str, str] = ("0", "0")
    ) -> None:
        self.log = folder / f"replica-{serial}.log"
        args = [sx_worker(), "serve", "--http-port", ports[0], "--grpc-port", ports[1], "--log-level", "info"]
        env = {**clean_env(), "SX_DATABASE_URL": database_url}
        with self.log.open("wb") as sink:
            self.proc = subprocess.Popen(args, env=env, stdout=sink, stderr=subprocess.STDOUT)
        match = wait_output(self.log, self.proc, r"scheduler: OpenAPI (http://\S+) .*gRPC (\S+)")
        self.http_url, self.grpc_address = match.group(1), match.group(2)

    @property
    def ports(self) -> tuple[str, str]:
        return self.http_url.rpartition(":")[2], self.grpc_address.rpartition(":")[2]


async def _connect(url: str) -> asyncpg.Connection:
    return await asyncpg.connect(url, timeout=10)


async def owner_pid(conn: asyncpg.Connection) -> tuple[int, str] | None:
    row = await conn.fetchrow(
        "SELECT holder, token FROM sx_group_leases"
        " WHERE namespace = $1 AND group_id = $2 AND expires_at > now()",
        NS,
        GROUP,
    )
    if row is None or not row["holder"]:
        return None
    return int(row["holder"].split("_")[-2]), row["token"]


async def lateness(conn: asyncpg.Connection, since: float, until: float) -> list[float]:
    rows = await conn.fetch(
        "SELECT extract(epoch FROM start_time - schedule_time) AS late FROM sx_instances"
        " WHERE trigger_type != 3 AND start_time IS NOT NULL"
        " AND schedule_time >= to_timestamp($1) AND schedule_time < to_timestamp($2)",
        since,
        until,
    )
    return sorted(float(r["late"]) for r in rows)


async def failover(
    conn: asyncpg.Connection, replicas: list[Replica], folder: Path, serial: int, database_url: str
) -> tuple[float, float]:
    """SIGKILL the group's owner; seconds until a new owner took the lease, and until its first start.
    The killed replica is started again at its ports."""
    held = await owner_pid(conn)
    assert held is not None, "no replica holds the group"
    pid, token = held
    victim = next(r for r in replicas if r.proc.pid == pid)
    killed_at = time.time()
    victim.proc.send_signal(signal.SIGKILL)
    victim.proc.wait()
    lease_at = started_at = None
    while started_at is None:
        if time.time() - killed_at > 120:
            raise SystemExit("no new owner dispatched within 120 s")
        if lease_at is None:
            row = await conn.fetchrow(
                "SELECT extract(epoch FROM acquired_at) AS at FROM sx_group_leases"
                " WHERE namespace = $1 AND group_id = $2 AND token != $3 AND holder != ''",
                NS,
                GROUP,
                token,
            )
            lease_at = None if row is None else float(row["at"])
        if lease_at is not None:
            first = await conn.fetchval(
                "SELECT extract(epoch FROM min(start_time)) FROM sx_instances"
                " WHERE start_time > to_timestamp($1)",
                lease_at,
            )
            started_at = None if first is None else float(first)
        await asyncio.sleep(0.02)
    assert lease_at is not None
    replicas[replicas.index(victim)] = Replica(folder, database_url, serial, victim.ports)
    return lease_at - killed_at, started_at - killed_at


def _start_worker(folder: Path, n: int, servers: str, app_key: str) -> subprocess.Popen[bytes]:
    """A worker serving this module's processor, given every replica's address; waits until it registered."""
    args = [sx_worker(), "run", "bench_failover", "--server", servers, "--namespace", NS, "--group", GROUP]
    args += ["--app-key", app_key, "--no-sync", "--log-level", "info"]
    env = {**clean_env(), "SX_DATA_DIR": str(folder / f"worker-{n}"), "SX_WORKER_ID": f"bench-{n}"}
    log = folder / f"worker-{n}.log"
    with log.open("wb") as sink:
        proc = subprocess.Popen(args, cwd=HERE, env=env, stdout=sink, stderr=subprocess.STDOUT)
    wait_output(log, proc, r"registered with scheduler")
    return proc


def _pct(values: list[float], q: float) -> float:
    return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--kills", type=int, default=5)
    parser.add_argument("--replicas", type=int, default=3, help="1 measures the lateness of one scheduler")
    parser.add_argument(
        "--url", default=DEFAULT_URL, help="a PostgreSQL server (a database is created on it)"
    )
    args = parser.parse_args()

    admin = await _connect(args.url)
    name = f"sx_bench_{int(time.time())}_{secrets.token_hex(3)}"
    await admin.execute(f'CREATE DATABASE "{name}"')
    database_url = re.sub(r"/[^/]*$", f"/{name}", args.url)
    procs: list[subprocess.Popen[bytes]] = []
    replicas: list[Replica] = []
    try:
        with tempfile.TemporaryDirectory(prefix="sx-bench-failover-") as tmp:
            folder = Path(tmp)
            replicas = [Replica(folder, database_url, n) for n in range(args.replicas)]
            with SyncOpenApiClient(replicas[0].http_url, namespace=NS, group_id=GROUP) as client:
                app_key = client.ensure_group().app_key
                spec = JobSpec(name="tick", class_name="bench.failover.tick", max_concurrency=5)
                for n in range(args.jobs):
                    client.create_job(
                        spec.model_copy(update={"name": f"tick-{n}", "schedule": cron("* * * * * ?")})
                    )
            servers = ",".join(r.grpc_address for r in replicas)
            procs += [_start_worker(folder, n, servers, app_key) for n in range(2)]
            conn = await _connect(database_url)
            await asyncio.sleep(3)  # settle: the first fires after start-up are not the steady state
            since = time.time()
            await asyncio.sleep(args.seconds)
            until = time.time() - 2
            await asyncio.sleep(3)
            late = await lateness(conn, since, until)
            print(
                f"{args.jobs} jobs due every second on {args.replicas} replica(s), {args.seconds:g} s: "
                f"{len(late)} fires"
            )
            worst = late[-1] * 1000 if late else float("nan")
            print(
                f"  lateness (processor start - schedule time): p50 {_pct(late, 0.5) * 1000:.1f} ms, "
                f"p99 {_pct(late, 0.99) * 1000:.1f} ms, max {worst:.1f} ms"
            )
            leases, firsts = [], []
            for k in range(args.kills if args.replicas > 1 else 0):
                lease, first = await failover(conn, replicas, folder, 10 + k, database_url)
                leases.append(lease)
                firsts.append(first)
                print(
                    f"  kill {k + 1}: new owner's lease after {lease:.2f} s, first start after {first:.2f} s"
                )
                await asyncio.sleep(5)  # the restarted replica joins (and may take the group over)
            if firsts:
                print(
                    f"failover (SIGKILL of the owner -> new owner's first start), median of {len(firsts)}: "
                    f"{statistics.median(firsts):.2f} s (lease taken: {statistics.median(leases):.2f} s); "
                    "target < 5 s"
                )
            bad = await conn.fetchval("SELECT count(*) FROM sx_instances WHERE status NOT IN (1, 2, 3, 4)")
            print(f"instances that did not succeed: {bad}")
            await conn.close()
    finally:
        for proc in [*procs, *(r.proc for r in replicas)]:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in [*procs, *(r.proc for r in replicas)]:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


if __name__ == "__main__":
    asyncio.run(main())
