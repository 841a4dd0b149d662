"""The scheduler's settings: flags, then ``SX_*`` environment variables, then a config file, then defaults."""

from __future__ import annotations

import importlib.util
import ipaddress
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from sx.processors.engine import load_settings

__all__ = ["SchedulerSettings", "is_loopback"]


class SchedulerSettings(BaseSettings):
    """How a scheduler stores its state and where it listens."""

    model_config = SettingsConfigDict(env_prefix="SX_", extra="forbid", frozen=True)

    data_dir: Path = Field(Path(".sx-data"), description="where the embedded SQLite store lives")
    database_url: str | None = Field(
        None, description="sqlite:///path or postgresql://...; default: SQLite in data_dir"
    )
    http_host: str = "127.0.0.1"
    """The interface the OpenAPI (HTTP) listens on; beyond loopback it needs an access key."""
    http_port: int = Field(8080, ge=0, le=65535)
    """The OpenAPI's port (0: any free port); a taken port is an error naming it."""
    grpc_host: str = "127.0.0.1"
    """The interface workers connect to (gRPC)."""
    grpc_port: int = Field(9090, ge=0, le=65535)
    """The workers' gRPC port (0: any free port); a port another process holds is an error."""
    allow_remote_unsigned: bool = Field(
        False, description="listen beyond loopback even though no access key is configured"
    )
    default_time_zone: str = Field("", description="IANA zone for jobs without one; default: the host's")
    history_keep: int = Field(
        300,
        ge=1,
        description="finished instances kept per job (pruned every sixteenth of it, so up to a "
        "sixteenth more for a while)",
    )
    instance_log_lines: int = Field(
        10_000,
        ge=1,
        description="lines an instance's online log keeps; later ones are counted in one "
        '"truncated: N lines dropped" line',
    )
    heartbeat_interval: float = Field(3.0, gt=0)
    """Seconds between a worker's heartbeats (told to workers when they register)."""
    heartbeat_timeout: float = Field(10.0, gt=0)
    """Seconds without a heartbeat after which a worker counts as lost and its work is re-dispatched."""
    no_worker_grace: float = Field(30.0, ge=0, description="seconds an instance waits for a worker")
    batch_resume_wait: float = Field(
        30.0,
        ge=0,
        description="seconds a batch instance whose master was lost waits for a worker holding its "
        "task file (to resume) before it starts over on another",
    )
    grpc_advertise_address: str = Field(
        "",
        description="host:port at which workers reach this scheduler's gRPC port, told to workers by the "
        "other replicas; default: grpc_host:port, or this host's name when grpc_host is a wildcard",
    )
    lease_seconds: float = Field(
        6.0,
        ge=1.0,
        description="seconds a replica's lease of a group lasts without renewal (renewed every second); "
        "a replica paused longer loses its groups to the others",
    )
    tracing: bool = Field(
        False,
        description="OpenTelemetry spans per instance (created, dispatched, reported), to the global tracer "
        "provider; needs pip install 'sx-worker[otel]'",
    )
    tls_cert: Path | None = None
    """PEM certificate of the gRPC port: turns TLS on (with ``tls_key``)."""
    tls_key: Path | None = None
    """PEM private key of ``tls_cert``."""
    tls_client_ca: Path | None = None
    """PEM CA that worker client certificates must be signed by (mutual TLS)."""
    alarm_webhook_url: str | None = None
    """Where the webhook alarm channel POSTs a job's alarms when the job names no URL of its own."""
    sms_gateway_url: str | None = None
    """The HTTP gateway the sms alarm channel POSTs to."""
    alarm_apprise_url: str | None = Field(
        None,
        description="apprise URL(s), comma-separated, where the apprise alarm channel sends jobs' alarms "
        "when a job names no alarmUrl (e.g. dingtalk://TOKEN, wecombot://KEY, mailto://...); needs "
        "pip install 'sx-worker[apprise]'",
    )

    @field_validator("http_host", "grpc_host")
    @classmethod
    def _host_not_empty(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty")
        return value

    @field_validator("alarm_apprise_url")
    @classmethod
    def _apprise_urls(cls, value: str | None) -> str | None:
        if not value or not value.strip():
            return None
        for url in value.replace(",", " ").split():
            if "://" not in url:
                raise ValueError(f"{url[:40]!r} is not an apprise URL (scheme://..., e.g. json://host/path)")
        # Checked here, not on the first alarm: a channel that cannot send should stop the start.
        if importlib.util.find_spec("apprise") is None:
            raise ValueError("apprise is not installed: pip install 'sx-worker[apprise]'")
        return value.strip()

    @classmethod
    def load(cls, config_file: Path | None = None, **flags: Any) -> SchedulerSettings:
        """Flags (None = not given) over ``SX_*`` env over the file's ``[scheduler]`` table over defaults."""
        return load_settings(cls, config_file, section="scheduler", **flags)


def is_loopback(host: str) -> bool:
    if host in ("localhost", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
