"""The scheduler's settings: flags, then ``SX_*`` environment variables, then a config file, then defaults."""

from __future__ import annotations

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
    http_port: int = Field(8080, ge=0, le=65535)
    grpc_host: str = "127.0.0.1"
    grpc_port: int = Field(9090, ge=0, le=65535)
    allow_remote_unsigned: bool = Field(
        False, description="listen beyond loopback even though no access key is configured"
    )
    default_time_zone: str = Field("", description="IANA zone for jobs without one; default: the host's")
    history_keep: int = Field(300, ge=1, description="finished instances kept per job")
    heartbeat_interval: float = Field(3.0, gt=0)
    heartbeat_timeout: float = Field(10.0, gt=0)
    no_worker_grace: float = Field(30.0, ge=0, description="seconds an instance waits for a worker")
    batch_resume_wait: float = Field(
        30.0,
        ge=0,
        description="seconds a batch instance whose master was lost waits for a worker holding its "
        "task file (to resume) before it starts over on another",
    )
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_client_ca: Path | None = None
    alarm_webhook_url: str | None = None
    sms_gateway_url: str | None = None

    @field_validator("http_host", "grpc_host")
    @classmethod
    def _host_not_empty(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty")
        return value

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
