"""``sx-worker check`` as a real process against a real scheduler: configuration, health, app key, TLS.

Exit 0 when the configuration and the connection are fine, 1 otherwise (issue 4).
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from sx.scheduler import SchedulerServer, SchedulerSettings
from sx.worker import OpenApiClient
from tests.e2e.conftest import clean_env, sx_worker
from tests.e2e.test_tls import Certs, certs  # noqa: F401  (the module-scoped certificate fixture)

NAMESPACE = "checked"
GROUP = "g"


@dataclass(frozen=True)
class Scheduler:
    grpc_address: str
    http_url: str
    app_key: str

    def args(self, *, app_key: str | None = None, group: str = GROUP) -> list[str]:
        """``check`` options naming this scheduler, its group and (by default) the right app key."""
        return [
            "--server",
            self.grpc_address,
            "--openapi",
            self.http_url,
            "--namespace",
            NAMESPACE,
            "--group",
            group,
            "--app-key",
            self.app_key if app_key is None else app_key,
        ]


@contextlib.asynccontextmanager
async def start(settings: SchedulerSettings) -> AsyncIterator[Scheduler]:
    async with (
        SchedulerServer(settings) as server,
        OpenApiClient(server.http_url, namespace=NAMESPACE, group_id=GROUP) as client,
    ):
        group = await client.ensure_group()
        yield Scheduler(server.grpc_address, server.http_url, group.app_key)


@pytest.fixture
async def scheduler(tmp_path: Path) -> AsyncIterator[Scheduler]:
    async with start(SchedulerSettings(data_dir=tmp_path, http_port=0, grpc_port=0)) as running:
        yield running


async def sx_check(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run ``sx-worker check ARGS`` (without the caller's SX_* settings); the loop keeps serving."""
    proc = await asyncio.create_subprocess_exec(
        sx_worker(),
        "check",
        *args,
        env=clean_env(**env),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode is not None
    return subprocess.CompletedProcess(list(args), proc.returncode, out.decode(), err.decode())


async def test_the_right_app_key_exits_0(scheduler: Scheduler) -> None:
    done = await sx_check(*scheduler.args())
    assert done.returncode == 0, done.stderr
    assert f"gRPC {scheduler.grpc_address}: SERVING" in done.stdout
    assert f"app key: accepted for group '{GROUP}' in namespace '{NAMESPACE}'" in done.stdout
    assert "HTTP 200" in done.stdout
    assert done.stderr == ""


@pytest.mark.parametrize(
    ("app_key", "group", "why"),
    [
        ("not-the-key", GROUP, "the app key proof does not match"),
        (None, "no-such-group", "no such group"),
        ("", GROUP, "none is configured"),
    ],
    ids=["wrong-key", "unknown-group", "no-key"],
)
async def test_a_refused_app_key_exits_1_with_a_clear_message(
    scheduler: Scheduler, app_key: str | None, group: str, why: str
) -> None:
    done = await sx_check(*scheduler.args(app_key=app_key, group=group))
    assert done.returncode == 1, done.stdout + done.stderr
    assert "SERVING" in done.stdout  # the scheduler was reached: only the key is at fault
    assert f"problem: app key for group '{group}' in namespace '{NAMESPACE}'" in done.stderr
    assert why in done.stderr
    assert "app key: accepted" not in done.stdout
    if app_key:
        assert app_key not in done.stdout + done.stderr  # the key itself is never printed


async def test_an_unreachable_scheduler_exits_1() -> None:
    # Port 1: nothing listens there.
    done = await sx_check("--server", "127.0.0.1:1", "--openapi", "http://127.0.0.1:1", "--app-key", "k" * 8)
    assert done.returncode == 1
    assert "problem: gRPC 127.0.0.1:1: UNAVAILABLE" in done.stderr
    assert "problem: OpenAPI http://127.0.0.1:1" in done.stderr


async def test_no_server_means_the_embedded_scheduler_and_exits_0() -> None:
    done = await sx_check()
    assert done.returncode == 0, done.stderr
    assert "embedded" in done.stdout


async def test_a_bad_configuration_exits_1_naming_the_field(tmp_path: Path) -> None:
    invalid = await sx_check("--server", "no-port")
    assert invalid.returncode == 1
    assert "server" in invalid.stderr and "no-port" in invalid.stderr

    cert = tmp_path / "client.pem"
    cert.write_text("not used: the key is missing")
    half_tls = await sx_check("--server", "127.0.0.1:1", SX_TLS_CERT=str(cert))
    assert half_tls.returncode == 1
    assert "tls_cert is set but tls_key is not" in half_tls.stderr

    unreadable = await sx_check("--server", "127.0.0.1:1", SX_TLS_CA=str(tmp_path / "missing.pem"))
    assert unreadable.returncode == 1
    assert "tls_ca=" in unreadable.stderr and "cannot be read" in unreadable.stderr


@pytest.mark.skipif(shutil.which("openssl") is None, reason="SKIPPED LOUDLY: no openssl to make certificates")
async def test_a_tls_scheduler_is_reached_with_the_tls_settings(
    tmp_path: Path,
    certs: Certs,  # noqa: F811
) -> None:
    settings = SchedulerSettings(
        data_dir=tmp_path,
        http_port=0,
        grpc_port=0,
        tls_cert=certs.server_cert,
        tls_key=certs.server_key,
        tls_client_ca=certs.ca,
    )
    tls = {
        "SX_TLS_CA": str(certs.ca),
        "SX_TLS_CERT": str(certs.client_cert),
        "SX_TLS_KEY": str(certs.client_key),
    }
    async with start(settings) as scheduler:
        done = await sx_check(*scheduler.args(), **tls)
        assert done.returncode == 0, done.stderr
        assert f"gRPC {scheduler.grpc_address} (TLS): SERVING" in done.stdout
        assert "app key: accepted" in done.stdout

        # The same key over TLS is still checked.
        wrong = await sx_check(*scheduler.args(app_key="not-the-key"), **tls)
        assert wrong.returncode == 1
        assert "the app key proof does not match" in wrong.stderr

        # Without the settings, the plaintext channel never gets through.
        plain = await sx_check(*scheduler.args())
        assert plain.returncode == 1
        assert f"problem: gRPC {scheduler.grpc_address}: UNAVAILABLE" in plain.stderr
