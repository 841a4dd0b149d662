"""TLS on the worker's stream: a server certificate, and client certificates when the scheduler asks."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from sx.processors import InstanceStatus, JobContext, Processor, Registry, processor
from sx.scheduler import SchedulerServer, SchedulerSettings
from sx.worker import OpenApiClient, Worker, WorkerSettings
from tests.e2e.conftest import DEADLINE, eventually

pytestmark = pytest.mark.skipif(
    shutil.which("openssl") is None, reason="SKIPPED LOUDLY: no openssl to make certificates"
)

REGISTRY = Registry()


@processor(name="tls.echo", registry=REGISTRY)
class Echo(Processor):
    def process(self, ctx: JobContext) -> str:
        return f"over tls: {ctx.instance_parameters}"


@dataclass(frozen=True)
class Certs:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    d = tmp_path_factory.mktemp("certs")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
             "-days", "1", "-subj", "/CN=sx-test-ca", cwd=d)  # fmt: skip
    for name, ext in (("server", "subjectAltName=IP:127.0.0.1"), ("client", "extendedKeyUsage=clientAuth")):
        (d / f"{name}.ext").write_text(ext + "\n")
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
                 "-subj", f"/CN={name}", cwd=d)  # fmt: skip
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                 "-out", f"{name}.pem", "-days", "1", "-extfile", f"{name}.ext", cwd=d)  # fmt: skip
    return Certs(d / "ca.pem", d / "server.pem", d / "server.key", d / "client.pem", d / "client.key")


@dataclass
class Cluster:
    scheduler: SchedulerServer
    client: OpenApiClient
    app_key: str


@pytest.fixture
async def cluster(tmp_path: Path, certs: Certs) -> AsyncIterator[Cluster]:
    settings = SchedulerSettings(
        data_dir=tmp_path,
        http_port=0,
        grpc_port=0,
        tls_cert=certs.server_cert,
        tls_key=certs.server_key,
        tls_client_ca=certs.ca,
    )
    async with (
        SchedulerServer(settings) as scheduler,
        OpenApiClient(scheduler.http_url, namespace="tls", group_id="g") as client,
    ):
        group = await client.ensure_group()
        yield Cluster(scheduler, client, group.app_key)


def worker_settings(
    cluster: Cluster, *, tls_ca: Path | None = None, tls_cert: Path | None = None, tls_key: Path | None = None
) -> WorkerSettings:
    return WorkerSettings(
        server=cluster.scheduler.grpc_address,
        namespace="tls",
        group_id="g",
        app_key=cluster.app_key,
        tls_ca=tls_ca,
        tls_cert=tls_cert,
        tls_key=tls_key,
    )


async def test_a_worker_with_a_client_certificate_runs_jobs_over_tls(cluster: Cluster, certs: Certs) -> None:
    settings = worker_settings(cluster, tls_ca=certs.ca, tls_cert=certs.client_cert, tls_key=certs.client_key)
    async with Worker(settings, registry=REGISTRY) as worker:
        await asyncio.wait_for(worker.connected.wait(), DEADLINE)
        job_id = await cluster.client.create_job(REGISTRY.get("tls.echo").spec)
        instance_id = await cluster.client.execute_job(job_id, instance_parameters="hi")

        async def finished() -> object:
            detail = await cluster.client.get_instance(job_id, instance_id)
            return detail if detail.status in (InstanceStatus.SUCCESS, InstanceStatus.FAILED) else None

        detail = await eventually(finished, what="the instance over TLS finished")
        assert detail.status == InstanceStatus.SUCCESS  # type: ignore[attr-defined]
        assert detail.result == "over tls: hi"  # type: ignore[attr-defined]


@pytest.mark.parametrize("with_ca", [True, False], ids=["no-client-cert", "plaintext"])
async def test_a_worker_without_a_client_certificate_never_registers(
    cluster: Cluster, certs: Certs, with_ca: bool
) -> None:
    settings = worker_settings(cluster, tls_ca=certs.ca) if with_ca else worker_settings(cluster)
    async with Worker(settings, registry=REGISTRY) as worker:
        # A negative outcome has no event to wait for: give it several reconnect rounds.
        await asyncio.sleep(1.5)
        assert not worker.is_connected
        assert cluster.scheduler.dispatcher.live_workers("tls", "g") == []
