"""The worker's settings: defaults < config file < ``SX_*`` environment < explicit overrides."""

from __future__ import annotations

import os
import secrets
import socket
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from sx.processors.engine import load_settings
from sx.worker._addresses import parse_server

__all__ = ["WorkerSettings", "default_worker_id"]


def default_worker_id() -> str:
    """``<host>_<pid>_<random>``: unique per process, readable in logs."""
    return f"{socket.gethostname()}_{os.getpid()}_{secrets.token_hex(3)}"


class WorkerSettings(BaseSettings):
    """How a worker connects to its scheduler and how much it runs at once.

    Every field has an environment twin ``SX_<FIELD>`` (``SX_GROUP_ID``, ``SX_LABELS`` as JSON, ...).
    Unknown keys are errors, in a config file as well as in keyword arguments.
    """

    model_config = SettingsConfigDict(env_prefix="SX_", extra="forbid", validate_default=True)

    server: str | None = None
    """The scheduler's gRPC ``host:port``, or several comma-separated (a list in a config file): the
    worker registers with one that answers and moves to another when it is lost. A DNS name with several
    records counts as several. None means an embedded scheduler (the CLI decides)."""
    namespace: str = "default"
    """The namespace of the worker's group."""
    group_id: str = "default"
    """The application group whose jobs this worker runs."""
    app_key: str = ""
    """The group's app key, proven to the scheduler at registration (never sent itself)."""
    worker_id: str | None = None
    """Defaults to ``<host>_<pid>_<random>``."""
    advertise_host: str = "127.0.0.1"
    """The host peers and the scheduler use to reach this worker's peer service."""
    peer_host: str = "127.0.0.1"
    """The interface the peer service listens on."""
    peer_port: int = Field(default=0, ge=0, le=65535)
    """The port the peer service listens on (0: any free port; map masters and their subtasks talk on it)."""
    concurrency: int = Field(default=16, ge=1)
    """Worker-wide limit on instances and tasks running at once."""
    thread_pool_size: int | None = Field(default=None, ge=1)
    """Threads for blocking hooks; defaults to ``concurrency``."""
    labels: dict[str, str] = Field(default_factory=dict)
    """Free-form key/value tags the worker registers with (shown in ``sx-worker workers``)."""
    data_dir: Path = Path(".sx-data")
    """Where batch-mode masters keep their task files (``map/instance-<id>.sqlite``); a master resumes
    an instance only from a file on this disk, so resume after a master's death needs the same host."""
    shutdown_grace: float = Field(default=30.0, ge=0)
    """Seconds running instances get to finish on shutdown before they are cancelled."""
    log_buffer_lines: int = Field(default=10_000, ge=1)
    """Log lines kept for the scheduler while it cannot be reached; beyond, the oldest are dropped
    (and counted in a "N lines dropped" line of their instance)."""
    metrics_port: int = Field(default=0, ge=0, le=65535)
    """The port serving Prometheus ``/metrics``, ``/health/live`` and ``/health/ready`` (0: off)."""
    metrics_host: str = "127.0.0.1"
    """The interface ``metrics_port`` listens on."""
    tracing: bool = False
    """OpenTelemetry spans per instance, hook and subtask, to the global tracer provider (needs
    ``pip install 'sx-worker[otel]'``)."""
    tls_ca: Path | None = None
    """PEM file of the CA that signed the scheduler's certificate: turns TLS on for the connection."""
    tls_cert: Path | None = None
    """PEM client certificate, for a scheduler that asks for one (with ``tls_key``)."""
    tls_key: Path | None = None
    """PEM private key of ``tls_cert``."""

    @field_validator("server", mode="before")
    @classmethod
    def _check_server(cls, value: object) -> object:
        # A config file may give a list; everywhere else it is one comma-separated string.
        if isinstance(value, list | tuple) and all(isinstance(item, str) for item in value):
            value = ",".join(value)
        if not isinstance(value, str):
            return value  # None, or a wrong type pydantic names
        return ",".join(parse_server(value))

    @property
    def server_addresses(self) -> list[str]:
        """The ``host:port`` entries of ``server`` (empty when it is None)."""
        return parse_server(self.server) if self.server is not None else []

    @property
    def effective_thread_pool_size(self) -> int:
        """``thread_pool_size``, or ``concurrency`` when it is not set."""
        return self.thread_pool_size or self.concurrency

    @classmethod
    def load(cls, config_file: Path | None = None, **overrides: Any) -> WorkerSettings:
        """Build settings from ``overrides`` (the CLI) > ``SX_*`` env > ``config_file`` > defaults.

        ``config_file`` is TOML or JSON (its ``[worker]`` table when it has one); unknown keys in it are
        errors naming the key. ``None`` overrides count as not given, so a CLI can pass every option.
        """
        return load_settings(cls, config_file, section="worker", **overrides)
