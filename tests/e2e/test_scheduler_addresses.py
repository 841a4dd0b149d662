"""A worker given several scheduler addresses, against real schedulers in this process: a DNS name's
records tried in turn under the name (TLS checked against it), a changed record followed at the next
reconnect, an address that accepts TCP but never answers left behind, and ``sx-worker check`` saying
which addresses answer.

The name ``sched.test`` is answered by the ``dns`` fixture, which stands in for a DNS server at the
system resolver (``socket.getaddrinfo``); every address is a real listener, or a real refusal, on
127.0.0.0/8 (all loopback on Linux: a port nothing listens on at 127.0.0.2 refuses).
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import subprocess
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from sx.processors import JobContext, Processor, Registry, processor
from sx.scheduler import SchedulerServer, SchedulerSettings
from sx.worker import OpenApiClient, Worker, WorkerRejected, WorkerSettings
from tests.e2e.conftest import DEADLINE, eventually
from tests.e2e.test_cli_check import sx_check

NAME = "sched.test"
NAMESPACE = "addresses"
GROUP = "g"
REGISTRY = Registry()


@processor(name="addresses.echo", registry=REGISTRY)
class Echo(Processor):
    def process(self, ctx: JobContext) -> str:
        return "ran"


class Dns:
    """What the system resolver answers for ``NAME`` in this process: ``records``, in order."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.records: list[str] = []
        real = socket.getaddrinfo

        def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
            if host != NAME:
                return real(host, port, *args, **kwargs)
            if not self.records:
                raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
            tcp = (socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "")
            return [(*tcp, (ip, int(port))) for ip in self.records]

        monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


@pytest.fixture
def dns(monkeypatch: pytest.MonkeyPatch) -> Dns:
    return Dns(monkeypatch)


@dataclass(frozen=True)
class Running:
    server: SchedulerServer
    app_key: str

    @property
    def port(self) -> int:
        return int(self.server.grpc_address.rpartition(":")[2])

    def worker_ids(self) -> list[str]:
        return [w.worker_id for w in self.server.dispatcher.live_workers(NAMESPACE, GROUP)]


@contextlib.asynccontextmanager
async def scheduler(settings: SchedulerSettings, *, app_key: str | None = None) -> AsyncIterator[Running]:
    """A scheduler with the test group (with ``app_key`` when given, so two stores share one)."""
    async with (
        SchedulerServer(settings) as server,
        OpenApiClient(server.http_url, namespace=NAMESPACE, group_id=GROUP) as client,
    ):
        if app_key is None:
            group = await client.ensure_group()
        else:
            await client.create_namespace()
            group = await client.create_group(app_key=app_key)
        yield Running(server, group.app_key)


def registered_with(caplog: pytest.LogCaptureFixture, address: str) -> int:
    return sum(f"registered with scheduler {address} as" in r.getMessage() for r in caplog.records)


@dataclass(frozen=True)
class NameCerts:
    ca: Path
    cert: Path
    key: Path


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def name_certs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NameCerts]:
    """A CA and a server certificate for ``NAME`` only (no IP address in it)."""
    if shutil.which("openssl") is None:
        pytest.skip("SKIPPED LOUDLY: no openssl to make certificates")
    d = tmp_path_factory.mktemp("name-certs")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
             "-days", "1", "-subj", "/CN=sx-test-ca", cwd=d)  # fmt: skip
    (d / "server.ext").write_text(f"subjectAltName=DNS:{NAME}\n")
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
             "-subj", f"/CN={NAME}", cwd=d)  # fmt: skip
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
             "-out", "server.pem", "-days", "1", "-extfile", "server.ext", cwd=d)  # fmt: skip
    yield NameCerts(d / "ca.pem", d / "server.pem", d / "server.key")


async def test_a_name_with_two_records_registers_at_the_one_that_answers_over_tls(
    tmp_path: Path, dns: Dns, name_certs: NameCerts, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="sx.worker")
    settings = SchedulerSettings(
        data_dir=tmp_path, http_port=0, grpc_port=0, tls_cert=name_certs.cert, tls_key=name_certs.key
    )
    async with scheduler(settings) as running:
        # The first record refuses; the certificate names NAME only, so the dialled IP address alone
        # would fail the TLS check.
        dns.records = ["127.0.0.2", "127.0.0.1"]
        worker_settings = WorkerSettings(
            server=f"{NAME}:{running.port}",
            namespace=NAMESPACE,
            group_id=GROUP,
            app_key=running.app_key,
            tls_ca=name_certs.ca,
        )
        async with Worker(worker_settings, registry=REGISTRY) as worker:
            await asyncio.wait_for(worker.connected.wait(), DEADLINE)
            assert running.worker_ids() == [worker.worker_id]
            assert registered_with(caplog, f"{NAME}:{running.port} (127.0.0.1:{running.port})") == 1
            assert f"{NAME}:{running.port} (127.0.0.2:{running.port}): not reachable" in caplog.text


async def test_a_changed_record_is_followed_at_the_next_reconnect(
    tmp_path: Path, dns: Dns, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="sx.worker")
    first_settings = SchedulerSettings(data_dir=tmp_path / "a", http_port=0, grpc_port=0)
    async with scheduler(first_settings) as first:
        port = first.port
        # The same port on another loopback address: only the record tells them apart.
        second_settings = SchedulerSettings(
            data_dir=tmp_path / "b", http_port=0, grpc_host="127.0.0.3", grpc_port=port
        )
        async with scheduler(second_settings, app_key=first.app_key) as second:
            dns.records = ["127.0.0.1"]
            worker_settings = WorkerSettings(
                server=f"{NAME}:{port}", namespace=NAMESPACE, group_id=GROUP, app_key=first.app_key
            )
            async with Worker(worker_settings, registry=REGISTRY) as worker:
                await asyncio.wait_for(worker.connected.wait(), DEADLINE)
                assert first.worker_ids() == [worker.worker_id]
                dns.records = ["127.0.0.3"]
                await first.server.stop()

                async def moved() -> bool:
                    return second.worker_ids() == [worker.worker_id]

                await eventually(moved, what="the worker to register at the new record")
                assert registered_with(caplog, f"{NAME}:{port} (127.0.0.3:{port})") == 1


async def test_an_address_that_never_answers_is_left_after_the_connect_timeout(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="sx.worker")
    held: list[asyncio.StreamWriter] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)  # accepts TCP and never speaks HTTP/2: gRPC stays CONNECTING

    listener = await asyncio.start_server(silent, "127.0.0.1", 0)
    silent_address = f"127.0.0.1:{listener.sockets[0].getsockname()[1]}"
    try:
        async with scheduler(SchedulerSettings(data_dir=tmp_path, http_port=0, grpc_port=0)) as running:
            worker_settings = WorkerSettings(
                server=f"{silent_address},{running.server.grpc_address}",
                namespace=NAMESPACE,
                group_id=GROUP,
                app_key=running.app_key,
            )
            async with Worker(worker_settings, registry=REGISTRY) as worker:
                await asyncio.wait_for(worker.connected.wait(), DEADLINE)
                assert running.worker_ids() == [worker.worker_id]
                assert f"scheduler {silent_address}: not reachable, trying the next address" in caplog.text
    finally:
        listener.close()
        for writer in held:
            writer.close()
        await listener.wait_closed()


async def test_a_scheduler_refusing_the_key_is_passed_over_and_all_refusing_ends_the_worker(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="sx.worker")
    async with (
        scheduler(SchedulerSettings(data_dir=tmp_path / "a", http_port=0, grpc_port=0)) as refusing,
        scheduler(SchedulerSettings(data_dir=tmp_path / "b", http_port=0, grpc_port=0)) as taking,
    ):
        both = f"{refusing.server.grpc_address},{taking.server.grpc_address}"
        settings = WorkerSettings(server=both, namespace=NAMESPACE, group_id=GROUP, app_key=taking.app_key)
        async with Worker(settings, registry=REGISTRY) as worker:
            await asyncio.wait_for(worker.connected.wait(), DEADLINE)
            assert taking.worker_ids() == [worker.worker_id]
            assert refusing.worker_ids() == []
            assert (
                f"scheduler {refusing.server.grpc_address} refused this worker (UNAUTHENTICATED)"
                in caplog.text
            )

        neither = settings.model_copy(update={"app_key": "not-the-key-of-either"})
        with pytest.raises(WorkerRejected):
            async with Worker(neither, registry=REGISTRY):
                pass


async def test_check_says_which_addresses_answer(tmp_path: Path) -> None:
    async with scheduler(SchedulerSettings(data_dir=tmp_path, http_port=0, grpc_port=0)) as running:
        address = running.server.grpc_address
        args = ["--namespace", NAMESPACE, "--group", GROUP, "--app-key", running.app_key]

        one_down = await sx_check("--server", f"127.0.0.1:1,{address}", *args)
        assert one_down.returncode == 0, one_down.stderr
        assert f"gRPC {address}: SERVING" in one_down.stdout
        assert (
            f"app key: accepted for group '{GROUP}' in namespace '{NAMESPACE}' at {address}"
            in one_down.stdout
        )
        assert "warning: gRPC 127.0.0.1:1: UNAVAILABLE" in one_down.stderr
        assert "problem" not in one_down.stderr

        # The flag repeated is the same list; a name that does not resolve is one more silent address.
        repeated = await sx_check("--server", "127.0.0.1:1", "--server", "sched.invalid:1", *args)
        assert repeated.returncode == 1
        assert "problem: gRPC 127.0.0.1:1: UNAVAILABLE" in repeated.stderr
        assert "problem: gRPC sched.invalid:1: sched.invalid does not resolve" in repeated.stderr

        wrong_key = await sx_check(
            "--server",
            f"{address},127.0.0.1:1",
            "--namespace",
            NAMESPACE,
            "--group",
            GROUP,
            "--app-key",
            "x" * 8,
        )
        assert wrong_key.returncode == 1
        assert (
            f"problem: app key for group '{GROUP}' in namespace '{NAMESPACE}' at {address}"
            in wrong_key.stderr
        )
